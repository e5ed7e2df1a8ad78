"""Backtest speed, as ratios measured in one run.

    python bench/backtest.py [--candles 1000000] [--sim-candles 1000000] [--repeats 5]
                             [--reference-repeats 3] [--jobs 3] [--engines 3]
                             [--skip-simulation]

1. End to end on 1,000,000 hourly candles: a real engine process (`python -m engine serve`)
   runs `backtest.start` with the packaged model, timed from submitting the command to the
   stored report (loading candles, model pass, simulation, statistics, trades and arrays
   stored). --engines rounds, each two fresh engines one after the other: one runs --jobs jobs,
   the first reading the candles from the database (the snapshot the import kept,
   db/candle_snapshots.py), the others reruns (the engine holds a dataset's candles:
   db/candle_cache.py); then, with the snapshot deleted, one runs a single job that reads the
   rows (as for a dataset from before snapshots; it keeps a snapshot again). Medians of the
   rounds' first jobs, of all reruns and of the rows-read jobs, vs the naive way a live
   session would do it, one candle at a time (predict_last + the account), timed on a
   2,000-candle sample (median of 3): candles/s each, and the ratio.
2. The simulation alone (engine/backtest.py `simulate`) on 1,000,000 candles with dense random
   signals (a third each of BUY, SELL, HOLD) and sparse (2 % BUY, 2 % SELL) random signals, no
   fees, vs backtesting.py 0.6 (FractionalBacktest, the same signals and rules): the median
   seconds of --repeats runs of ours and --reference-repeats of theirs, the ratio, whether the
   trades are identical (on the first 100,000 candles), and ours again with fees and slippage.
Candles: the packaged S&P 500 and NASDAQ daily series, each detrended, chained (each piece
rescaled to continue the last close) and repeated to the length asked, on hourly timestamps.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chained(database, n: int) -> pd.DataFrame:
    from db import candles

    cols = ["open", "high", "low", "close", "volume"]
    pieces = []
    for s in ("SP500", "NASDAQ"):
        p = candles.load(database, s, "1d")[cols].to_numpy().copy()
        # Detrend each piece (scale candle i by (first / last)^(i / n)) so that repeating it does
        # not compound the price level into numbers no broker could size an order for.
        drift = (p[0, 0] / p[-1, 3]) ** (np.arange(len(p)) / (len(p) - 1))
        p[:, :4] *= drift[:, None]
        pieces.append(p)
    out, last = [], None
    while sum(len(p) for p in out) < n:
        for p in pieces:
            q = p.copy()
            if last is not None:
                q[:, :4] *= last / q[0, 0]
            out.append(q)
            last = q[-1, 3]
    x = np.concatenate(out)[:n]
    ts = 1_500_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000
    return pd.DataFrame({"ts": ts, **{c: x[:, i] for i, c in enumerate(cols)}})


CASH = 10_000.0
CHECK = 100_000  # candles on which trades are compared one by one


def timed(run, repeats: int) -> tuple:
    """The last result of `repeats` calls of run(), their median wall time and their median
    CPU time (this process's: on a shared machine it shows the work without the waiting)."""
    wall, cpu = [], []
    for _ in range(max(repeats, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return result, float(np.median(wall)), float(np.median(cpu))


def reference_run(big: pd.DataFrame, actions: np.ndarray):
    """backtesting.py 0.6 over the same candles and signals, all-in, no fees: a callable that
    runs it and returns its stats."""
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    data = pd.DataFrame(
        {"Open": big.open, "High": big.high, "Low": big.low, "Close": big.close,
         "Volume": big.volume}
    ).set_index(pd.to_datetime(big.ts, unit="ms"))  # fmt: skip

    class Signals(Strategy):
        def init(self):
            pass

        def next(self):
            a = actions[len(self.data) - 1]
            if a == 0 and not self.position.is_long:
                self.buy(size=0.999999999)
            elif a == 1 and not self.position.is_short:
                self.sell(size=0.999999999)

    bt = FractionalBacktest(data, Signals, cash=CASH, commission=0.0, exclusive_orders=True,
                            finalize_trades=True, fractional_unit=1e-9)  # fmt: skip

    def run():
        # its progress bar (tqdm, when installed) stays on, off the screen
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return bt.run()

    return run


def compare(big: pd.DataFrame, actions: np.ndarray, repeats: int = 5, reference_repeats: int = 3,
            **costs) -> dict:  # fmt: skip
    """Our simulation vs backtesting.py on the same candles and signals, no fees (so random
    trading does not take equity below what a broker can size an order for): median seconds of
    each, and whether the trades are identical (same entry candles, same exit prices; a trade
    still open at the end closes at the last close here, at the last open in backtesting.py's
    finalize_trades, so the last exit is left out) with the equity before the last candle.
    With `costs` (fee_bps, slippage_bps), ours is timed once more with them."""
    from engine import backtest

    out = {}

    def ours(**c):
        return backtest.simulate(big.ts, big.open, big.close, actions, cash=CASH, **c)

    sim, out["ours"], out["ours_cpu"] = timed(ours, repeats)
    out["trades"] = len(sim.trades)
    if costs:
        out["ours_with_costs"] = timed(lambda: ours(**costs), repeats)[1]
    ref, out["theirs"], out["theirs_cpu"] = timed(reference_run(big, actions), reference_repeats)
    t = ref._trades
    out["same"] = bool(
        len(t) == len(sim.trades)
        and np.array_equal(t.EntryBar.to_numpy(), sim.trades.entry_index.to_numpy())
        and np.allclose(
            t.ExitPrice.to_numpy()[:-1], sim.trades.exit_price.to_numpy()[:-1], rtol=1e-12
        )
    )
    out["before_end"] = abs(sim.equity[-2] / ref._equity_curve["Equity"].to_numpy()[-2] - 1)
    return out


def simulation(big: pd.DataFrame, repeats: int, reference_repeats: int) -> None:
    """Section 2: the simulation alone vs backtesting.py, dense and sparse random signals."""
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 3, len(big))
    sparse = np.full(len(big), 2)
    pick = rng.random(len(big))
    sparse[pick < 0.02] = 0
    sparse[(pick >= 0.02) & (pick < 0.04)] = 1
    costs = {"fee_bps": 1.0, "slippage_bps": 1.0}
    for name, actions in (("dense", dense), ("sparse", sparse)):
        actions[0] = 2  # backtesting.py never calls next() on the first candle
        full = compare(big, actions, repeats, reference_repeats, **costs)
        # Over a million random candles equity decays (volatility drag) until backtesting.py's
        # whole 1e-9 units stop matching exact fractions; trades are compared where it holds.
        check = compare(big.iloc[:CHECK].reset_index(drop=True), actions[:CHECK], 1, 1)
        ours, theirs = full["ours"], full["theirs"]
        print(
            f"simulation, {len(big):,} candles, {name} ({full['trades']:,} trades): ours "
            f"{ours:.3f} s ({len(big) / ours / 1e6:.1f}M candles/s), backtesting.py {theirs:.1f} s "
            f"-> {theirs / ours:.0f}x (medians of {repeats} and {reference_repeats} runs; CPU "
            f"{full['ours_cpu']:.3f} s vs {full['theirs_cpu']:.1f} s -> "
            f"{full['theirs_cpu'] / full['ours_cpu']:.0f}x); "
            f"identical trades: {check['same']} (first {CHECK:,} candles, {check['trades']:,} "
            f"trades; equity before the last candle within {check['before_end']:.1e}); ours with "
            f"{costs['fee_bps']:g} bps fee and {costs['slippage_bps']:g} bps slippage "
            f"{full['ours_with_costs']:.3f} s",
            flush=True,
        )


def seconds(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times) + " s"


def without_snapshot(database, symbol: str) -> None:
    from sqlalchemy import delete

    from db.models import CandleSnapshot

    with database.begin() as conn:
        conn.execute(delete(CandleSnapshot).where(CandleSnapshot.symbol == symbol))


def engine_jobs(database, repeats: int) -> tuple[list[float], int]:
    """Seconds from submitting `backtest.start` to its stored report, for each of `repeats`
    backtests of the BENCH series run one after another by a real engine process (the
    packaged default model), and the trades of the last."""
    from contract.access import SYSTEM_ACCOUNT
    from db import backtests, bus, engines

    home = os.environ["CANDLELAB_HOME"]
    log = open(Path(home) / "engine.log", "w")  # noqa: SIM115 (open while the engine runs)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--no-seed"], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        while not any(r.pid == proc.pid for r in engines.alive(database)):
            if proc.poll() is not None:
                raise SystemExit(f"the engine did not start: see {log.name}")
            time.sleep(0.1)
        times, row = [], None
        for i in range(repeats):
            t0 = time.perf_counter()
            cid = bus.submit(database, "backtest.start", {"symbol": "BENCH", "timeframe": "1h",
                             "name": f"bench {i}"}, created_by=SYSTEM_ACCOUNT)  # fmt: skip
            while (cmd := bus.get(database, cid)).status in ("pending", "running"):
                time.sleep(0.05)
            if cmd.status != "done":
                raise SystemExit(f"backtest.start {cmd.status}: {cmd.error}")
            while (row := backtests.get(database, cmd.result["backtest_id"])).status == "running":
                time.sleep(0.05)
            times.append(time.perf_counter() - t0)
            if row.status != "done":
                raise SystemExit(f"backtest {row.id} ended {row.status}: see {log.name}")
        return times, row.metrics["# Trades"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def per_candle_loop(model, ts, ohlcv, account_cls, predict_last, sample: int = 2_000) -> float:
    """Seconds a candle the naive way a live session would backtest: predict the latest candle
    from its context, then fill through the account, one candle at a time."""
    acc = account_cls(fee_bps=10)
    t0 = time.perf_counter()
    for i in range(1_000, 1_000 + sample):
        acc.open_bar(int(ts[i]), ohlcv[i, 0])
        acc.mark(ohlcv[i, 3])
        acc.signal(predict_last(model, ohlcv[: i + 1]).action)
    return (time.perf_counter() - t0) / sample


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=1_000_000)
    ap.add_argument("--sim-candles", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=4,
                    help="end-to-end jobs: the first, then the median of the others")  # fmt: skip
    ap.add_argument("--engines", type=int, default=3,
                    help="rounds of fresh engines: medians of first jobs over them")  # fmt: skip
    ap.add_argument("--skip-simulation", action="store_true", help="end to end only")
    ap.add_argument("--repeats", type=int, default=5, help="runs of ours, timed as a median")
    ap.add_argument("--reference-repeats", type=int, default=3,
                    help="runs of backtesting.py (seconds each on a million candles)")  # fmt: skip
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    import db
    from contract.access import SYSTEM_ACCOUNT
    from db import candles
    from engine import checkpoints
    from engine.account import Account
    from engine.inference import predict_last
    from engine.model import CandleTransformer
    from market.importer import seed_samples

    database = db.init()
    seed_samples(database)
    frame = chained(database, args.candles)
    candles.store(database, frame, symbol="BENCH", timeframe="1h", source="bench", sha256="-",
                  format="bench", rows_in_file=len(frame), rows_skipped=0,
                  created_by=SYSTEM_ACCOUNT)  # fmt: skip
    cfg, state, _ = checkpoints.load(database, checkpoints.ensure_default(database))
    model = CandleTransformer(cfg).eval()
    model.load_state_dict(state)

    firsts, reruns, rows_reads = [], [], []
    for _ in range(max(1, args.engines)):
        jobs, trades = engine_jobs(database, max(2, args.jobs))
        firsts.append(jobs[0])
        reruns += jobs[1:]
        without_snapshot(database, "BENCH")
        rows_reads += engine_jobs(database, 1)[0]
    ohlcv = frame[["open", "high", "low", "close", "volume"]].to_numpy()
    loop = []
    for _ in range(3):
        loop.append(per_candle_loop(model, frame.ts.to_numpy(), ohlcv, Account, predict_last))
    rate_n = 1 / statistics.median(loop)
    first, rerun, rows_read = map(statistics.median, (firsts, reruns, rows_reads))
    print(
        f"end to end (engine job, command -> stored report), {len(frame):,} candles "
        f"({trades:,} trades); per-candle loop {rate_n:,.0f} candles/s; target >= 200,000/s, "
        f">= 100x\n  a fresh engine's first job (candles read from the database: the import's "
        f"snapshot; model loaded), median of {len(firsts)} ({seconds(firsts)}): {first:.2f} s "
        f"= {len(frame) / first:,.0f} candles/s -> {len(frame) / first / rate_n:.0f}x\n  "
        f"reruns on the same dataset (its candles held by the engine), median of "
        f"{len(reruns)} ({seconds(reruns)}): {rerun:.2f} s = {len(frame) / rerun:,.0f} "
        f"candles/s -> {len(frame) / rerun / rate_n:.0f}x\n  a fresh engine's first job with "
        f"the snapshot deleted (rows read; one kept again), median of {len(rows_reads)} "
        f"({seconds(rows_reads)}): {rows_read:.2f} s = {len(frame) / rows_read:,.0f} "
        f"candles/s -> {len(frame) / rows_read / rate_n:.0f}x"
    )

    if not args.skip_simulation:
        simulation(chained(database, args.sim_candles), args.repeats, args.reference_repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
