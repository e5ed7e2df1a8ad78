"""Peak memory and time of checking a large candle CSV (and its .gz), and of refusing a gzip bomb.

    python bench/import_memory.py [--rows 900000]

Each read runs in a fresh subprocess so its peak RSS is its own. Prints the peak in MB, the
seconds, and the peak as a multiple of the file's size (the figure to keep low: it says how many
copies of the file a read holds at once).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
READ = """
import resource, sys, time
from market.csv_import import CsvLayoutError, read_candles
t = time.perf_counter()
try:
    f = read_candles(sys.argv[1], "1m")
    outcome = f"{f.report.valid_rows:,} rows"
except CsvLayoutError as exc:
    outcome = "refused: " + str(exc)[:60]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t, outcome)
"""


def write_csv(path: Path, rows: int) -> None:
    """One-minute candles, a random walk, as a typical exchange export."""
    rng = np.random.default_rng(0)
    close = 1000 + np.cumsum(rng.normal(0, 1, rows))
    open_ = close + rng.normal(0, 0.5, rows)
    pd.DataFrame({
        "timestamp": pd.date_range("2000-01-01", periods=rows, freq="1min", tz="UTC")
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "open": open_.round(2), "high": (np.maximum(open_, close) + 1).round(2),
        "low": (np.minimum(open_, close) - 1).round(2), "close": close.round(2),
        "volume": rng.integers(1, 10_000, rows),
    }).to_csv(path, index=False)  # fmt: skip


def write_bomb(path: Path, unpacked_mb: int) -> None:
    """A small .gz that unpacks to `unpacked_mb` MB of one repeated line."""
    line = b"2020-01-01T00:00:00Z,1,1,1,1,1\n" * 32_768  # 1 MB
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(unpacked_mb):
            out.write(line)


def measure(path: Path) -> tuple[float, float, str]:
    out = subprocess.run([sys.executable, "-c", READ, str(path)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split(maxsplit=2)  # fmt: skip
    return float(out[0]), float(out[1]), out[2].strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=900_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="candlelab-bench-") as tmp:
        csv_path, gz_path, bomb = Path(tmp, "big.csv"), Path(tmp, "big.csv.gz"), Path(tmp, "b.gz")
        write_csv(csv_path, args.rows)
        gz_path.write_bytes(gzip.compress(csv_path.read_bytes(), compresslevel=6))
        write_bomb(bomb, 1024)
        for what, path in (("CSV", csv_path), ("same, gzipped", gz_path), ("gzip bomb", bomb)):
            size_mb = path.stat().st_size / 2**20
            peak, seconds, outcome = measure(path)
            print(f"{what:14} {size_mb:7.1f} MB file: peak {peak:7.0f} MB ({peak / size_mb:6.1f}× "
                  f"the file), {seconds:5.1f} s, {outcome}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
