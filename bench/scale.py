"""Several engines on one PostgreSQL database: job throughput and command pickup, as ratios
measured in one run.

    python bench/scale.py [PG_URL] [--jobs 8] [--repeats 3] [--pings 200]

WARNING: this DROPS and recreates the `public` schema of the database at PG_URL (default:
CANDLELAB_TEST_PG_URL): everything in it is lost. Point it at a scratch database only.

Engines are real processes (`python -m engine serve --name eN --max-jobs 1 --no-seed`, each
with DATABASE_URL set and its own temporary CANDLELAB_HOME), at the default poll interval
(100 ms); the packaged sample candles are imported first.
  1. Job throughput: K backtest jobs (default 8: the full S&P 500 daily series each, the
     active checkpoint) queued at once, run by 1 engine and then by 2 engines, each engine
     running one job at a time: wall time from the first submit until every job has ended
     (median of the repeats), and the ratio 1 engine / 2 engines. Both engines share the
     machine's cores, so on a small machine expect well under 2x.
  2. Pickup latency: `ping` commands submitted one at a time (each waited for) with 1 engine
     and with 3 engines: pickup = the command's claimed_at − created_at (the submit's own
     transaction included), and submit → done as the client sees it (the client polls every
     2 ms): p50 / p95 in ms, and the ratio 3 engines / 1 engine. Target: p95 pickup ≤ 25 ms
     with three engines (every engine is woken by LISTEN/NOTIFY; one claims the command).
Engine processes are stopped (SIGTERM, then SIGKILL) on every exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STOP_WAIT_S = 20


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Engines:
    """The engine processes this bench started; `stop_all` ends every one of them."""

    def __init__(self, url: str, scratch: Path) -> None:
        self.url, self.scratch = url, scratch
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, database) -> None:
        from db import engines

        name = f"e{len(self.procs) + 1}"
        home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.scratch))
        log_path = self.scratch / f"{name}.log"
        env = {**os.environ, "DATABASE_URL": self.url, "CANDLELAB_HOME": str(home),
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine",
                    "serve",
                    "--name",
                    name,
                    "--max-jobs",
                    "1",
                    "--no-seed",
                ],  # fmt: skip
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script, which stops them in order
            )
        self.procs.append((name, proc, log_path))
        deadline = time.monotonic() + 120
        while not any(r.pid == proc.pid for r in engines.alive(database)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"engine {name} did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop_all(self) -> None:
        """SIGTERM to each (they finish the current command and record a clean stop), then
        SIGKILL to any still running after STOP_WAIT_S, or at once on a second Ctrl-C."""
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        try:
            for _, proc, _ in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except KeyboardInterrupt:
            print("interrupted again: killing the engines")
        finally:
            for name, proc, log_path in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    print(f"engine {name} was still running: killed (see {log_path})")
            self.procs.clear()


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt


def reset_schema(url: str):
    """Drop and recreate the `public` schema, migrate, import the sample candles."""
    from sqlalchemy import text

    import db
    from db import connection, settings
    from market.importer import seed_samples

    database = connection.get_engine(settings.normalise_url(url))
    with database.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    db.upgrade(database)
    for outcome in seed_samples(database):
        print(f"  seeded {outcome.message()}")
    return database


def run_jobs(database, k: int, tag: str) -> float:
    """Queue K backtests at once; seconds until every one of their jobs has ended."""
    from sqlalchemy import func, select

    from contract.access import SYSTEM_ACCOUNT
    from db import bus
    from db.models import Job

    t0 = time.perf_counter()
    ids = [
        bus.submit(
            database,
            "backtest.start",
            {"symbol": "SP500", "timeframe": "1d", "name": f"scale {tag} {i}"},
            created_by=SYSTEM_ACCOUNT,
        )  # fmt: skip
        for i in range(k)
    ]
    while True:
        with database.begin() as conn:
            ended = conn.scalar(
                select(func.count()).where(
                    Job.command_id.in_(ids), Job.status.not_in(("queued", "running"))
                )
            )
        if ended == k:
            break
        for cid in ids:  # a command that failed never makes a job: say why, do not hang
            row = bus.get(database, cid)
            if row.status in ("failed", "cancelled"):
                raise SystemExit(f"backtest command {cid} {row.status}: {row.error}")
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    with database.begin() as conn:
        bad = conn.execute(
            select(Job.id, Job.status, Job.error).where(
                Job.command_id.in_(ids), Job.status != "done"
            )
        ).all()
    if bad:
        raise SystemExit(f"jobs did not finish: {bad}")
    return wall


def run_pings(database, n: int) -> tuple[list[float], list[float], list[float]]:
    """N pings one at a time, in ms: pickup (from the table), submit → done at the client, and
    the submit call alone (its transaction, which the pickup includes)."""
    from contract.access import SYSTEM_ACCOUNT
    from db import bus

    pickup, client, submit = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        cid = bus.submit(database, "ping", {}, created_by=SYSTEM_ACCOUNT)
        submit.append((time.perf_counter() - t0) * 1000)
        while (row := bus.get(database, cid)).status not in bus.FINAL:
            time.sleep(0.002)
        client.append((time.perf_counter() - t0) * 1000)
        if row.status != "done":
            raise SystemExit(f"ping {cid} {row.status}: {row.error}")
        pickup.append((row.claimed_at - row.created_at).total_seconds() * 1000)
    return pickup, client, submit


def who_claimed(database, since_id: int) -> dict[str, int]:
    """Pings claimed by each engine (by name) since command `since_id`."""
    from sqlalchemy import func, select

    from db.models import Command, EngineInstance

    with database.begin() as conn:
        rows = conn.execute(
            select(EngineInstance.name, func.count())
            .select_from(Command)
            .join(EngineInstance, EngineInstance.id == Command.claimed_by)
            .where(Command.kind == "ping", Command.id > since_id)
            .group_by(EngineInstance.name)
            .order_by(EngineInstance.name)
        ).all()
    return dict(rows)


def who_ran(database, since_id: int) -> dict[str, int]:
    """Backtest jobs run by each engine (by name) for commands after `since_id`."""
    from sqlalchemy import func, select

    from db.models import EngineInstance, Job

    with database.begin() as conn:
        rows = conn.execute(
            select(EngineInstance.name, func.count())
            .select_from(Job)
            .join(EngineInstance, EngineInstance.id == Job.engine_id)
            .where(Job.command_id > since_id)
            .group_by(EngineInstance.name)
            .order_by(EngineInstance.name)
        ).all()
    return dict(rows)


def last_command_id(database) -> int:
    from sqlalchemy import func, select

    from db.models import Command

    with database.begin() as conn:
        return conn.scalar(select(func.coalesce(func.max(Command.id), 0)))


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Several engines on one PostgreSQL database: job throughput and command "
        "pickup with 1, 2 and 3 engine processes. Drops and recreates the public schema of "
        "PG_URL (use a scratch database).",
        epilog="WARNING: drops and recreates the public schema of the database at PG_URL.",
    )
    ap.add_argument("url", nargs="?", default=os.environ.get("CANDLELAB_TEST_PG_URL"),
                    metavar="PG_URL",
                    help="a scratch PostgreSQL database, whose public schema is DROPPED and "
                    "recreated (default: CANDLELAB_TEST_PG_URL)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=8, help="backtest jobs queued at once (K)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the K jobs per engine count")
    ap.add_argument("--pings", type=int, default=200, help="pings per engine count")
    args = ap.parse_args()
    if not args.url or not args.url.startswith(("postgres://", "postgresql")):
        ap.error("give a PostgreSQL URL (or set CANDLELAB_TEST_PG_URL)")

    scratch = Path(tempfile.mkdtemp(prefix="candlelab-scale-"))
    os.environ["CANDLELAB_HOME"] = str(scratch)  # this process's own data directory
    os.environ.pop("DATABASE_URL", None)
    # Ctrl-C (even when started in the background, where SIGINT starts ignored) and SIGTERM
    # both end through the `finally` below, which stops the engines.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)

    load_before = os.getloadavg()[0]
    print(f"resetting the public schema of {args.url.rsplit('@', 1)[-1]} and seeding")
    database = reset_schema(args.url)
    fleet = Engines(args.url, scratch)
    jobs_s: dict[int, list[float]] = {}
    pings: dict[int, tuple[list[float], list[float], list[float]]] = {}
    claimed: dict[int, dict[str, int]] = {}
    ran: dict[int, dict[str, int]] = {}
    try:
        fleet.start(database)
        run_pings(database, 20)  # warm-up: connections, the handler's first call
        since = last_command_id(database)
        pings[1] = run_pings(database, args.pings)
        claimed[1] = who_claimed(database, since)
        run_jobs(database, 1, "warm-up")  # the model load and first pass, paid once
        since = last_command_id(database)
        jobs_s[1] = [run_jobs(database, args.jobs, f"1e r{r}") for r in range(args.repeats)]
        ran[1] = who_ran(database, since)
        fleet.start(database)
        run_jobs(database, 2, "warm-up")  # both engines load the model once
        since = last_command_id(database)
        jobs_s[2] = [run_jobs(database, args.jobs, f"2e r{r}") for r in range(args.repeats)]
        ran[2] = who_ran(database, since)
        fleet.start(database)
        run_pings(database, 20)
        since = last_command_id(database)
        pings[3] = run_pings(database, args.pings)
        claimed[3] = who_claimed(database, since)
    except KeyboardInterrupt:
        print(f"interrupted: stopping the engines (logs in {scratch})")
        return 130
    finally:
        fleet.stop_all()

    print(f"\n{os.cpu_count()} CPU cores, 1-minute load average {load_before:.1f} at the start "
          f"and {os.getloadavg()[0]:.1f} at the end (other work on the machine skews both "
          f"parts); engine poll interval 100 ms (default); logs in {scratch}")  # fmt: skip
    one, two = statistics.median(jobs_s[1]), statistics.median(jobs_s[2])
    print(f"\n1. {args.jobs} backtest jobs (SP500 1d, full range) queued at once, --max-jobs 1 each "
          f"(median of {args.repeats}):")  # fmt: skip
    for n, runs in jobs_s.items():
        each = ", ".join(f"{s:.2f}" for s in runs)
        by = ", ".join(f"{k} {v}" for k, v in ran[n].items())
        print(f"   {n} engine{'s' if n > 1 else ' '}: {statistics.median(runs):6.2f} s  "
              f"(runs: {each}; jobs run by {by})")  # fmt: skip
    print(f"   ratio 1 engine / 2 engines: {one / two:.2f}x")

    print(f"\n2. pickup latency, {args.pings} pings one at a time:")
    print(f"   {'engines':<9}{'pickup p50':>11}{'p95':>8}{'client p50':>12}{'p95':>8}"
          f"{'submit call p50':>17}   claimed by")  # fmt: skip
    for n, (pickup, client, submit) in pings.items():
        by = ", ".join(f"{k} {v}" for k, v in claimed[n].items())
        print(f"   {n:<9}{pct(pickup, 50):9.1f}ms{pct(pickup, 95):6.1f}ms"
              f"{pct(client, 50):10.1f}ms{pct(client, 95):6.1f}ms"
              f"{pct(submit, 50):15.1f}ms   {by}")  # fmt: skip
    (p1, c1, _), (p3, c3, _) = pings[1], pings[3]
    print(f"   ratio 3 engines / 1 engine: pickup p50 {pct(p3, 50) / pct(p1, 50):.2f}x, "
          f"p95 {pct(p3, 95) / pct(p1, 95):.2f}x; client p95 {pct(c3, 95) / pct(c1, 95):.2f}x")  # fmt: skip
    verdict = "met" if pct(p3, 95) <= 25 else "NOT met"
    print(f"   target p95 pickup <= 25 ms with 3 engines: {verdict} ({pct(p3, 95):.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
