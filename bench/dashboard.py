"""What watching costs: the app process's CPU and the live sessions' candle → prediction time,
with no browser tab open and with 10 Chromium tabs on the Live page.

    python bench/dashboard.py [--minutes 5] [--tabs 10] [--sessions 4] [--pace 1] [--repeats 10]
                              [--chromium-nice 19]
                              [--modes none] [--profile] [--keep] [--machine-share]

Starts the real app as the browser tests do (`scripts/start.py`: engine + Streamlit, through
tests/browser.py's helpers) on a fresh data directory with SQLite and the packaged sample data,
and starts `--sessions` live sessions through the command bus (`session.start`, as the Live
page sends it, as the trader "ana"): replays of the S&P 500 / NASDAQ daily candles at `--pace`
seconds a candle, in mode `--modes` (one, or a comma-separated list used in turn). It opens
`--tabs` tabs once: pages of one signed-in Chromium context (one person, many tabs), on /live,
tab i showing session i mod `--sessions`. Then it alternates `--repeats` windows without tabs
and with them, `--minutes` in all for each (so 5 minutes and 10 repeats: windows of 30 s each
way). "Without" is the tabs paused in Chromium's debugger (no timer runs, so a tab asks the
app for nothing; its socket stays open): short windows, side by side and in turn forwards and
backwards, see the machine's drift alike, which 100 s windows with tabs closed and opened
again between them (minutes apart) did not. A window with tabs starts `--warmup`/2 seconds
after the tabs resume (each refreshes within its second). The people
watching would be on other machines: here their Chromium runs at `--chromium-nice` (19), its
scheduling group included (`niced`), so that drawing ten charts a second does not take this
machine's two cores from the app and the engine (0: as the app, which mostly measures the
browser).

Per window:
  - the Streamlit process's CPU time (utime + stime of the process and of its reaped children,
    /proc/<pid>/stat) over the window's wall time, as % of one core; the engine's and
    Chromium's for context (not targets)
  - the candle → prediction time of every prediction stored in the window: the engine's
    `predictions.latency_ms` (the candle's slot on the replay's schedule → the prediction's
    insert, in the candle's own transaction; db/sessions.record_candle)
Prints the medians over windows of the CPU shares, the p50 / p99 of all predictions of each
condition pooled (and the per-window p99s), and the difference: pooled, pair by pair (the
median; a window's p99 of ~120 predictions is its second-largest, so read it with the count
of positive pairs), and a 90 % bootstrap interval of the pooled difference resampling pairs of
windows (rough with ten pairs: a pooled p99 rests on a dozen values).

`--machine-share`: a third window per repeat with the tabs paused and a busy loop taking one
core, run as the tabs' Chromium is (its niceness, a session and scheduling group of its own):
what a core taken by the browser costs the sessions' p99 on this machine, without the app doing
anything for tabs. On a 2-core machine the tabs' Chromium takes about one core.
Targets (issue 12): ≤ 10 % of one core in the app process with 10 tabs, and ≤ 2 ms added to
the sessions' p99.

`--profile`: also profiles the Streamlit process during the windows with tabs (a sampler thread
started in that process by a bench-only `sitecustomize` on PYTHONPATH: per thread CPU time from
`pthread_getcpuclockid`, charged to the thread's Python stack; plus every SQL statement's count
and time through SQLAlchemy's cursor events) and prints where its CPU went. The sampler costs
CPU itself: the CPU figures of a profiled run read high.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE_ENV = "CANDLELAB_BENCH_PROFILE"  # the control directory of the in-process profiler
TICK = os.sysconf("SC_CLK_TCK")


# -- the profiler that runs inside the Streamlit process (bench only) -------------------------


class Profiler:
    """Charges each thread's CPU time (pthread CPU clocks, read every `interval` s) to the
    Python stack that thread is on, and times every SQL statement. Controlled through files in
    `control`: `reset` clears what was counted, `dump` writes it to `profile.json`."""

    def __init__(self, control: str, interval: float = 0.005) -> None:
        self.control, self.interval = Path(control), interval
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.cpu_ns = 0
            self.inclusive: Counter[str] = Counter()
            self.leaf: Counter[str] = Counter()
            self.stacks: Counter[str] = Counter()  # folded: outermost;…;innermost
            self.sql: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    @classmethod
    def start(cls, control: str) -> None:
        self = cls(control)
        threading.Thread(target=self.run, name="bench-profiler", daemon=True).start()
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        started: dict[int, float] = {}

        @event.listens_for(Engine, "before_cursor_execute")
        def _before(conn, cursor, statement, parameters, context, executemany):
            started[id(cursor)] = time.perf_counter()

        @event.listens_for(Engine, "after_cursor_execute")
        def _after(conn, cursor, statement, parameters, context, executemany):
            t = started.pop(id(cursor), None)
            if t is None:
                return
            key = " ".join(statement.split())[:160]
            with self.lock:
                entry = self.sql[key]
                entry[0] += 1
                entry[1] += (time.perf_counter() - t) * 1000

    def run(self) -> None:
        me = threading.get_ident()
        last: dict[int, int] = {}
        started = False
        while True:
            time.sleep(self.interval)
            frames = sys._current_frames()
            for ident, frame in frames.items():
                if ident == me:
                    continue
                try:
                    now = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
                except (OSError, OverflowError):
                    continue
                before = last.get(ident)
                # A thread not seen before (Streamlit runs each script run on a new thread) or a
                # reused id: everything on its clock was spent since the last sample.
                spent = now if before is None or now < before else now - before
                last[ident] = now
                if started and spent > 0:
                    self.charge(frame, spent)
            for ident in set(last) - set(frames):
                del last[ident]
            started = True
            del frames
            self.obey()

    def charge(self, frame, ns: int) -> None:
        keys = []
        while frame is not None:
            code = frame.f_code
            keys.append(f"{_short(code.co_filename)}:{code.co_name}")
            frame = frame.f_back
        with self.lock:
            self.cpu_ns += ns
            self.leaf[keys[0]] += ns
            for key in set(keys):
                self.inclusive[key] += ns
            self.stacks[";".join(reversed(keys))] += ns

    def obey(self) -> None:
        for name in ("reset", "dump"):
            path = self.control / name
            if path.exists():
                path.unlink()
                if name == "reset":
                    self.reset()
                else:
                    with self.lock:
                        out = {"cpu_ns": self.cpu_ns, "inclusive": dict(self.inclusive),
                               "leaf": dict(self.leaf), "sql": dict(self.sql),
                               "stacks": dict(self.stacks)}  # fmt: skip
                    tmp = self.control / "profile.tmp"
                    tmp.write_text(json.dumps(out))
                    tmp.rename(self.control / "profile.json")


def _short(filename: str) -> str:
    """A file name as a package path: site-packages/streamlit/x.py → streamlit/x.py."""
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


SITECUSTOMIZE = f"""\
import os, sys
if os.environ.get({PROFILE_ENV!r}) and sys.argv and sys.argv[0].endswith("streamlit_server.py"):
    sys.path.insert(0, {str(ROOT)!r})
    from bench.dashboard import Profiler
    Profiler.start(os.environ[{PROFILE_ENV!r}])
"""


def ask_profile(control: Path, what: str) -> dict | None:
    """`reset` or `dump` the in-process profiler; a dump's content."""
    (control / "profile.json").unlink(missing_ok=True)
    (control / what).write_text("")
    if what != "dump":
        return None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (control / "profile.json").exists():
            return json.loads((control / "profile.json").read_text())
        time.sleep(0.05)
    raise RuntimeError("the profiler in the Streamlit process did not answer")


def print_profile(prof: dict, seconds: float, top: int = 25) -> None:
    total = prof["cpu_ns"] or 1
    print(f"\nprofile of the Streamlit process with tabs open: {total / 1e9:.1f} s CPU charged "
          f"in {seconds:.0f} s ({total / 1e7 / seconds:.1f} % of a core, sampler included)")  # fmt: skip
    by_package: Counter[str] = Counter()
    for key, ns in prof["leaf"].items():
        by_package[key.split("/")[0].split(":")[0]] += ns
    print("  self time by package of the running frame:")
    for package, ns in by_package.most_common(12):
        print(f"    {100 * ns / total:5.1f} %  {package}")
    print("  inclusive time (share of the process's CPU):")
    for key, ns in Counter(prof["inclusive"]).most_common(top):
        print(f"    {100 * ns / total:5.1f} %  {key}")
    ours = [(k, ns) for k, ns in prof["inclusive"].items()
            if k.startswith(("pages/", "db/", "streamlit_app"))]  # fmt: skip
    print("  inclusive, the project's own functions:")
    for key, ns in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * ns / total:5.1f} %  {key}")
    sql = sorted(prof["sql"].items(), key=lambda kv: -kv[1][1])
    n = sum(c for c, _ in prof["sql"].values())
    ms = sum(t for _, t in prof["sql"].values())
    print(f"  SQL: {n:,} statements, {ms / 1000:.2f} s ({n / seconds:.0f}/s, "
          f"{ms / seconds / 10:.1f} % of the window); by total time:")  # fmt: skip
    for statement, (count, spent) in sql[:15]:
        print(f"    {spent:8.0f} ms {count:6d}× {spent / count:6.2f} ms  {statement[:110]}")


# -- the measurement --------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """CPU seconds of a process and its reaped children (/proc/<pid>/stat: utime, stime,
    cutime, cstime); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICK


def descendants(pid: int) -> list[int]:
    """Every live process under `pid`."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children[ppid].append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class Processes:
    """The app's processes (under scripts/start.py) and this bench's Chromium."""

    def __init__(self, start_pid: int) -> None:
        under = descendants(start_pid)
        self.app = next(p for p in under if "streamlit_server.py" in cmdline(p))
        self.engine = next(p for p in under if "-m engine serve" in cmdline(p))

    def app_s(self) -> float:
        """The Streamlit process, with any process it started (Streamlit forks none today)."""
        return cpu_s(self.app) + sum(cpu_s(p) for p in descendants(self.app))

    def engine_s(self) -> float:
        return cpu_s(self.engine)

    @staticmethod
    def chromium_s() -> float:
        return sum(cpu_s(p) for p in descendants(os.getpid()) if "chrom" in cmdline(p))


def latencies(database, session_ids: list[int], since, until) -> list[float]:
    """candle → prediction ms of the predictions the sessions stored in [since, until)."""
    from sqlalchemy import select

    from db.connection import readonly
    from db.models import PredictionRow as P

    with readonly(database).begin() as conn:
        return list(
            conn.scalars(
                select(P.latency_ms).where(
                    P.session_id.in_(session_ids), P.created_at >= since, P.created_at < until
                )
            )
        )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Window:
    """One measured stretch: CPU seconds of each process and the predictions stored."""

    def __init__(self, procs: Processes) -> None:
        from db.models import utcnow

        self.procs, self.utcnow = procs, utcnow
        self.t0, self.at0 = time.monotonic(), utcnow()
        self.c0 = (procs.app_s(), procs.engine_s(), procs.chromium_s())

    def close(self, database, session_ids: list[int]) -> dict:
        c1 = (self.procs.app_s(), self.procs.engine_s(), self.procs.chromium_s())
        wall = time.monotonic() - self.t0
        lat = latencies(database, session_ids, self.at0, self.utcnow())
        app, engine, chromium = (100 * (b - a) / wall for a, b in zip(self.c0, c1, strict=True))
        return {"wall": wall, "app": app, "engine": engine, "chromium": chromium, "lat": lat}


# -- the app, the sessions, the tabs ----------------------------------------------------------


def start_sessions(database, n: int, modes: list[str], pace: float, seconds: float):
    """`n` replay sessions through the bus, as the Live page starts them, each with candles
    left for `seconds`; their ids."""
    from db import bus, candles

    out = []
    for i in range(n):
        symbol = ("SP500", "NASDAQ")[i % 2]
        ts = candles.load(database, symbol, "1d").ts
        first = 200 + 10 * i  # each its own stretch, with history before it
        if (len(ts) - first) * pace < seconds:
            raise SystemExit(f"{symbol} has {len(ts)} candles: too few for {seconds:.0f} s at "
                             f"{pace:g} s a candle; shorten --minutes or raise --pace")  # fmt: skip
        payload = {"symbol": symbol, "timeframe": "1d", "mode": modes[i % len(modes)],
                   "feed": {"kind": "replay", "pace_s": pace, "start_ts": int(ts.iloc[first])}}  # fmt: skip
        row = bus.wait(database, bus.submit(database, "session.start", payload,
                                            created_by="ana"), 600)  # fmt: skip
        if row.status != "done":
            raise SystemExit(f"session.start {row.status}: {row.error or 'no answer (engine)'}")
        out.append(row.result["session_id"])
    return out


def open_tabs(context, url: str, session_ids: list[int], n: int) -> list:
    """`n` tabs on /live in the signed-in `context`, tab i on session i mod len; each has
    drawn its chart when this returns."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)  # a cold page on a busy 2-core machine
    pages = []
    for i in range(n):
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url + "/live")
        sid = session_ids[i % len(session_ids)]
        box = page.get_by_role("combobox", name="Session")
        expect(box).to_be_visible()
        if not box.input_value().startswith(f"#{sid} "):
            box.click()
            page.get_by_role("option", name=f"#{sid} ").first.click()
        expect(box).to_have_value(re.compile(rf"^#{sid} "))
        pages.append(page)
        print(f"    tab {i + 1} on session #{sid}", end="\r", flush=True)
    for page in pages:
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
    return pages


class Freezer:
    """Freezes and thaws the tabs (each page's script paused in the debugger, through the
    DevTools protocol): a paused tab runs no timer, so it asks the app for no refresh, and its
    socket stays open. (Chromium's page lifecycle "frozen" state is refused to a visible page.)
    Windows without tabs and with them can then alternate every few tens of seconds, so that
    what the machine does meanwhile falls on both alike."""

    def __init__(self, context, pages: list) -> None:
        self.pages, self.cdp = pages, [context.new_cdp_session(page) for page in pages]
        self.paused: set[int] = set()
        for i, cdp in enumerate(self.cdp):
            cdp.on("Debugger.paused", lambda _event, i=i: self.paused.add(i))
            cdp.send("Debugger.enable")

    def freeze(self, timeout_s: float = 30.0) -> None:
        """Returns once every tab is paused (a tab pauses when its script next runs: within
        its refresh's second), so that no pause still pending can stop a tab later on."""
        if len(self.paused) == len(self.cdp):
            return  # paused already
        for cdp in self.cdp:
            cdp.send("Debugger.pause")
        deadline = time.monotonic() + timeout_s
        while len(self.paused) < len(self.cdp):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.cdp) - len(self.paused)} tabs did not pause")
            self.pages[0].wait_for_timeout(50)  # lets Playwright deliver the events

    def thaw(self) -> None:
        if not self.paused:
            return  # drawing already
        for cdp in self.cdp:
            cdp.send("Debugger.resume")
        self.paused.clear()


def niced(executable: str, niceness: int, home: Path, name: str = "chromium-niced") -> str:
    """`executable`, run at `niceness` (a wrapper script in `home`): the tabs' browser stands in
    for people on other machines, so it should not take the cores from the app and the engine.
    Its processes' niceness alone does not do it: Chromium (as root) sets its own, and under
    autogroup scheduling the session Playwright starts it in competes as a whole. Without the
    group's niceness the sessions' p99 went from 7-10 ms to 57-270 ms with 10 tabs."""
    if niceness == 0:
        return executable
    wrapper = home / name
    wrapper.write_text(
        "#!/bin/sh\n"
        f"[ -w /proc/self/autogroup ] && echo {niceness} > /proc/self/autogroup 2>/dev/null\n"
        f'exec nice -n {niceness} {executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0,
                    help="measured time for each condition (tabs paused, tabs drawing)")  # fmt: skip
    ap.add_argument("--tabs", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--pace", type=float, default=1.0, help="seconds per replayed candle")
    ap.add_argument("--repeats", type=int, default=10, help="windows per condition")
    ap.add_argument("--modes", default="none", help="session modes, comma-separated, in turn")
    ap.add_argument(
        "--warmup", type=float, default=10.0, help="seconds of settling: half before each window"
    )
    ap.add_argument("--profile", action="store_true", help="profile the app with tabs open")
    ap.add_argument("--profile-out", help="write the whole profile (JSON) to this file")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--machine-share", action="store_true",
                    help="also windows with the tabs paused and a niced busy core (the browser's share)")  # fmt: skip
    ap.add_argument("--app-dir", help="run the app from this checkout (e.g. a git worktree of "
                    "an older commit, for a before/after in the same conditions)")  # fmt: skip
    ap.add_argument("--chromium-nice", type=int, default=19,
                    help="niceness of the Chromium that plays the tabs (0: as the app)")  # fmt: skip
    ap.add_argument("--streamlit", action="append", metavar="OPTION=VALUE",
                    help="a Streamlit config option for the app (experiments)")  # fmt: skip
    args = ap.parse_args()
    faulthandler.enable()
    # Terminated (timeout, plain kill; not kill -9), still stop the app: an engine left replaying its sessions would
    # share the cores with the next run's and skew it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright
    from streamlit.string_util import to_snake_case

    from tests.browser import ARGS, CHROMIUM, healthy, sign_in, start_app, stop_app
    from tests.conftest import wait_until

    home = Path(tempfile.mkdtemp(prefix="candlelab-dash-"))
    os.environ["CANDLELAB_HOME"] = str(home)
    os.environ.pop("DATABASE_URL", None)
    env = {"PYTHONFAULTHANDLER": "1"}  # a crashing app process says where, in app.log
    for option in args.streamlit or []:  # e.g. runner.postScriptGC=false, for experiments
        name, value = option.split("=", 1)
        env[f"STREAMLIT_{to_snake_case(name.replace('.', '_')).upper()}"] = value
    control = home / "profiler"
    if args.profile:
        control.mkdir()
        (home / "hook").mkdir()
        (home / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env |= {PROFILE_ENV: str(control),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(home / "hook"),
                                                           os.environ.get("PYTHONPATH")]))}  # fmt: skip
    window_s = args.minutes * 60 / args.repeats
    # Candles for the windows, and generously for opening tabs on a busy machine.
    conditions = 3 if args.machine_share else 2
    run_s = conditions * args.minutes * 60 + args.repeats * conditions * args.warmup + 300

    from tests.browser import free_port

    if args.app_dir:  # tests/browser.start_app starts scripts/start.py from its ROOT
        import tests.browser

        tests.browser.ROOT = Path(args.app_dir).resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    import db
    from db import candles, engines

    proc = start_app(home, port, people={"ana": "trader"}, env=env)
    try:
        database = db.init()
        wait_until(lambda: healthy(url), 120, 0.2, "Streamlit health")
        wait_until(lambda: engines.alive(database), 120, 0.2, "engine online")
        wait_until(lambda: candles.total(database) > 0, 300, 0.5, "sample data")
        procs = Processes(proc.pid)
        modes = args.modes.split(",")
        ids = start_sessions(database, args.sessions, modes, args.pace, run_s)
        print(f"app from {args.app_dir or ROOT} on {url} ({home}); sessions {ids} in mode {args.modes}, a candle every "
              f"{args.pace:g} s; {args.repeats} × {window_s:.0f} s windows per condition",
              flush=True)  # fmt: skip
        time.sleep(args.warmup)
        idle, busy, spun, profiles = [], [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=niced(CHROMIUM, args.chromium_nice, home),
                                        args=ARGS)  # fmt: skip
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            sign_in(context.new_page(), url, "ana")
            for page in context.pages:
                page.close()
            tabs = open_tabs(context, url, ids, args.tabs)
            freezer = Freezer(context, tabs)

            def paused(r: int) -> None:
                freezer.freeze()  # the tabs ask for nothing: the app does nothing for them
                time.sleep(args.warmup / 2)
                w = Window(procs)
                time.sleep(window_s)
                idle.append(w.close(database, ids))
                report("paused", r, idle[-1])

            def a_core(r: int) -> None:
                freezer.freeze()
                spun.append(busy_core_window(procs, database, ids, args, home, window_s))
                report("a core", r, spun[-1])

            def drawing(r: int) -> None:
                freezer.thaw()
                time.sleep(args.warmup / 2)
                if args.profile:
                    ask_profile(control, "reset")
                w = Window(procs)
                time.sleep(window_s)
                busy.append(w.close(database, ids))
                if args.profile:
                    profiles.append(ask_profile(control, "dump"))
                report(f"{args.tabs} tabs", r, busy[-1])

            # In turn forwards and backwards (ABBA), so that a steady drift of the machine
            # does not favour one condition; the paused window is next to each of the others.
            order = [a_core, paused, drawing] if args.machine_share else [paused, drawing]
            for r in range(args.repeats):
                for window in order if r % 2 == 0 else order[::-1]:
                    window(r)
            browser.close()
        summary(args, idle, busy, window_s)
        if spun:
            machine_share(idle, spun)
        if profiles:
            merged = {"cpu_ns": 0, "inclusive": Counter(), "leaf": Counter(), "sql": {},
                      "stacks": Counter()}  # fmt: skip
            for prof in profiles:
                merged["cpu_ns"] += prof["cpu_ns"]
                for part in ("inclusive", "leaf", "stacks"):
                    merged[part].update(prof[part])
                for k, (c, t) in prof["sql"].items():
                    old = merged["sql"].get(k, (0, 0.0))
                    merged["sql"][k] = (old[0] + c, old[1] + t)
            print_profile(merged, window_s * len(profiles))
            if args.profile_out:
                Path(args.profile_out).write_text(json.dumps(merged))
                print(f"  (the whole profile, folded stacks included: {args.profile_out})")
    finally:
        stop_app(proc)
        db.connection.dispose_all()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


def busy_core_window(procs, database, ids, args, home: Path, window_s: float) -> dict:
    """A window with no tab and a busy loop taking one core, run as the tabs' Chromium is."""
    import subprocess

    spin = niced(sys.executable, args.chromium_nice, home, name="spinner-niced")
    spinner = subprocess.Popen([spin, "-c", "while True: pass"], start_new_session=True)
    try:
        time.sleep(args.warmup / 2)
        w = Window(procs)
        time.sleep(window_s)
        return w.close(database, ids)
    finally:
        spinner.kill()
        spinner.wait()


def machine_share(idle: list[dict], spun: list[dict]) -> None:
    p99_idle, p99_spun = pooled_p99(idle), pooled_p99(spun)
    print(f"  the machine's share: tabs paused, one core busy at the browser's niceness: p99 "
          f"{p99_spun:.1f} ms vs {p99_idle:.1f} ms ({p99_spun - p99_idle:+.1f} ms); "
          f"{pairwise(idle, spun)}")  # fmt: skip


def pooled_p99(windows: list[dict]) -> float:
    return pct([x for w in windows for x in w["lat"]], 0.99)


def pairwise(base: list[dict], other: list[dict]) -> str:
    """The p99's difference pair by pair, and the pooled difference's bootstrap interval."""
    pairs = [pct(b["lat"], 0.99) - pct(a["lat"], 0.99) for a, b in zip(base, other, strict=True)]
    lo, hi = p99_difference_interval(base, other)
    return (f"pair by pair: median {statistics.median(pairs):+.1f} ms, "
            f"{sum(d > 0 for d in pairs)} of {len(pairs)} positive {[round(d, 1) for d in pairs]}; "
            f"90 % interval of the pooled difference (pairs resampled): {lo:+.1f} to {hi:+.1f} ms")  # fmt: skip


def report(what: str, r: int, w: dict) -> None:
    print(f"  window {r + 1}, {what:>8}: app {w['app']:5.1f} % · engine {w['engine']:5.1f} % · "
          f"chromium {w['chromium']:6.1f} % of a core · {len(w['lat'])} predictions, "
          f"p50 {pct(w['lat'], 0.5):.1f} ms, p99 {pct(w['lat'], 0.99):.1f} ms", flush=True)  # fmt: skip


def p99_difference_interval(idle: list[dict], busy: list[dict], draws: int = 2000):
    """A 90 % bootstrap interval of p99(busy) - p99(idle), resampling whole pairs of
    neighbouring windows: the machine's own drift, the larger noise here, moves both windows
    of a pair alike, so pairs are the unit that varies independently."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, diffs = len(idle), []
    for _ in range(draws):
        pick = rng.integers(0, n, n)
        diffs.append(pooled_p99([busy[i] for i in pick]) - pooled_p99([idle[i] for i in pick]))
    return tuple(np.quantile(diffs, [0.05, 0.95]))


def summary(args, idle: list[dict], busy: list[dict], window_s: float) -> None:
    med = statistics.median
    app_idle, app_busy = med(w["app"] for w in idle), med(w["app"] for w in busy)
    lat_idle = [x for w in idle for x in w["lat"]]
    lat_busy = [x for w in busy for x in w["lat"]]
    p99_idle, p99_busy = pooled_p99(idle), pooled_p99(busy)
    seconds = window_s * len(busy)
    print(f"\n{args.tabs} tabs on {args.sessions} sessions, {seconds:.0f} s: app process "
          f"{app_busy:.1f} % of a core (tabs paused: {app_idle:.1f} %); candle->prediction p99 "
          f"{p99_busy:.1f} ms vs {p99_idle:.1f} ms paused ({p99_busy - p99_idle:+.1f} ms)")  # fmt: skip
    print(f"  p50 {pct(lat_busy, 0.5):.1f} ms vs {pct(lat_idle, 0.5):.1f} ms paused; per-window p99 "
          f"with tabs {[round(pct(w['lat'], 0.99), 1) for w in busy]}, paused "
          f"{[round(pct(w['lat'], 0.99), 1) for w in idle]}; engine {med(w['engine'] for w in busy):.0f} % "
          f"vs {med(w['engine'] for w in idle):.0f} %, Chromium {med(w['chromium'] for w in busy):.0f} % "
          "of a core")  # fmt: skip
    print(f"  p99 added, {pairwise(idle, busy)}")
    ok_cpu, ok_lat = app_busy <= 10, p99_busy - p99_idle <= 2
    print(f"  targets: app ≤ 10 % of a core: {'met' if ok_cpu else 'NOT met'}; "
          f"p99 +≤ 2 ms: {'met' if ok_lat else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
