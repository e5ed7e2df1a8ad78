"""Real market data that ships inside a registry package, for a fresh install with no files.

The `arch` package (NCSA licence) carries daily S&P 500 and NASDAQ Composite candles,
1999-01-04 to 2018-12-31, 5,031 each. They are read as plain CSV data
through importlib.resources; none of arch's code is imported.
"""

from __future__ import annotations

import gzip
import importlib.resources
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    symbol: str
    timeframe: str
    package: str
    resource: str
    description: str

    def read_bytes(self) -> bytes:
        """The CSV file's bytes; raises a clear error if the package is not installed."""
        try:
            blob = (importlib.resources.files(self.package) / self.resource).read_bytes()
        except ModuleNotFoundError as exc:
            raise RuntimeError(
                f"sample data for {self.symbol} comes from the '{self.package}' package, which "
                f"is not installed: pip install -r requirements.txt"
            ) from exc
        return gzip.decompress(blob) if self.resource.endswith(".gz") else blob

    @property
    def source(self) -> str:
        return f"{self.package}:{self.resource}"


SAMPLES = [
    Sample(
        "SP500",
        "1d",
        "arch",
        "data/sp500/sp500.csv.gz",
        "S&P 500 index, daily, 1999–2018 (arch package, NCSA licence)",
    ),
    Sample(
        "NASDAQ",
        "1d",
        "arch",
        "data/nasdaq/nasdaq.csv.gz",
        "NASDAQ Composite, daily, 1999–2018 (arch package, NCSA licence)",
    ),
]
