"""Command bus round trip: submit → done, as a view sees it, against a real engine process.

    python bench/command_roundtrip.py [--n 300] [--load-rows-per-s 200]

Four runs of N pings each, one at a time, on a fresh SQLite database with the engine at its
default settings (poll every 100 ms):
  idle / wake-up       the default: the submit wakes the engine over loopback UDP
  idle / poll only     the baseline: the same, with the wake-up suppressed (submit(notify=False))
  load / wake-up       while the engine itself commits 200 rows/s to another table
  load / poll only
Round trip = from just before submit() to the moment the client reads status 'done' (the
client polls every 2 ms). Also shown: the engine-side time from the table (finished_at −
created_at). "database is locked" errors are counted in the client, the engine's log and the
engine's load writer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_pings(database, n: int, notify: bool, errors: list[str]) -> tuple[list[float], list[float]]:
    from contract.access import SYSTEM_ACCOUNT
    from db import bus

    client, table = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            cid = bus.submit(database, "ping", {}, created_by=SYSTEM_ACCOUNT, notify=notify)
            while (row := bus.get(database, cid)).status not in bus.FINAL:
                time.sleep(0.002)
        except Exception as exc:  # counted, not hidden
            errors.append(str(exc))
            continue
        client.append((time.perf_counter() - t0) * 1000)
        table.append((row.finished_at - row.created_at).total_seconds() * 1000)
    return client, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--load-rows-per-s", type=float, default=200)
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="candlelab-bench-")
    os.environ["CANDLELAB_HOME"] = home
    os.environ.pop("DATABASE_URL", None)
    import db
    from contract.access import SYSTEM_ACCOUNT
    from db import bus, engines

    database = db.init()
    log = open(Path(home) / "engine.log", "w")  # noqa: SIM115
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--debug-commands", "--no-seed"],
        cwd=ROOT,
        env=os.environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not engines.alive(database):
            if time.monotonic() > deadline or engine.poll() is not None:
                raise SystemExit("engine did not come up; see " + log.name)
            time.sleep(0.1)
        time.sleep(1.5)  # let the submit side's wake-address cache see the engine
        run_pings(database, 20, True, [])  # warm-up

        results = {}
        errors: list[str] = []
        for notify in (True, False):
            results[("idle", notify)] = run_pings(database, args.n, notify, errors)
        cid = bus.submit(
            database,
            "debug.load",
            {"rows_per_s": args.load_rows_per_s, "seconds": 3600},
            created_by=SYSTEM_ACCOUNT,
        )
        assert bus.wait(database, cid, 10).status == "done"
        time.sleep(1.0)
        for notify in (True, False):
            results[("load", notify)] = run_pings(database, args.n, notify, errors)
        stats = bus.wait(
            database, bus.submit(database, "debug.load_stats", created_by=SYSTEM_ACCOUNT), 10
        ).result
    finally:
        engine.terminate()
        engine.wait(timeout=15)
        log.close()
    engine_locked = (Path(home) / "engine.log").read_text().count("database is locked")
    client_locked = sum("locked" in e for e in errors)

    print(f"command round trip, {args.n} pings per run, engine poll interval 100 ms (default)")
    print(f"{'run':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'engine-side p95':>17}")
    for (phase, notify), (client, table) in results.items():
        name = f"{phase} / {'wake-up' if notify else 'poll only'}"
        print(
            f"{name:<22}{pct(client, 50):9.1f}{pct(client, 95):9.1f}{pct(client, 99):9.1f}"
            f"{pct(table, 95):17.1f}"
        )
    for phase in ("idle", "load"):
        wake, poll = results[(phase, True)][0], results[(phase, False)][0]
        print(
            f"{phase}: wake-up is {statistics.median(poll) / statistics.median(wake):.1f}x faster"
            f" than polling at the median, {pct(poll, 95) / pct(wake, 95):.1f}x at p95"
        )
    print(
        f"load writer: {stats['rows']} rows committed one by one "
        f"(target {args.load_rows_per_s:.0f}/s)"
    )
    print(
        f'"database is locked" errors: client {client_locked}, engine log {engine_locked}, '
        f"load writer {stats['lock_errors']}; other client errors {len(errors) - client_locked}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
