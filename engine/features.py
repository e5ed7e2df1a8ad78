"""The one feature pipeline: per-candle, causal, used by training, live inference and backtests.

Feature i describes candle i relative to candles before it only: returns and ranges against the
previous close, volume against the trailing average of the previous `VOLUME_N` volumes, close
against the trailing average of the previous `TREND_N` closes. Nothing is normalised over a
window, so a candle's features do not depend on where a computation started once `LOOKBACK`
candles of history exist (before that, both the live and the batch path see the same start of
the data, so they still agree).
"""

from __future__ import annotations

import numpy as np

FEATURE_VERSION = 1
VOLUME_N = 20
TREND_N = 20
LOOKBACK = max(VOLUME_N, TREND_N) + 1  # candles a feature can depend on, itself included
NAMES = (
    "open_ret",  # 100·ln(open / previous close)
    "high_ret",  # 100·ln(high / previous close)
    "low_ret",  # 100·ln(low / previous close)
    "close_ret",  # 100·ln(close / previous close)
    "range",  # 100·ln(high / low)
    "body",  # 100·ln(close / open)
    "volume_rel",  # ln(volume / mean of the previous VOLUME_N volumes)
    "trend",  # 100·ln(close / mean of the previous TREND_N closes)
)
N_FEATURES = len(NAMES)
CLIP = 20.0


def _trailing_mean_before(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of x[i-n:i] (what exists of it) for every i; NaN at i = 0.

    Each window is summed on its own, oldest value first, so a mean is the same to the last bit
    wherever the array starts (a difference of cumulative sums would carry the rounding of
    everything before it): a pass can compute features chunk by chunk (`rows`)."""
    padded = np.concatenate([np.zeros(n), np.asarray(x, dtype=np.float64)])
    total = np.zeros(len(x))
    for k in range(n):
        total += padded[k : k + len(x)]
    count = np.minimum(np.arange(len(x)), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def compute(ohlcv: np.ndarray) -> np.ndarray:
    """Features for candles `ohlcv` (n, 5: open, high, low, close, volume) → (n, N_FEATURES)
    float32. Row i depends on rows max(0, i-LOOKBACK+1) .. i only."""
    x = np.asarray(ohlcv, dtype=np.float64)
    o, h, lo, c, v = (x[:, j] for j in range(5))
    prev_c = np.concatenate([o[:1], c[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        feats = np.stack(
            [
                100 * np.log(o / prev_c),
                100 * np.log(h / prev_c),
                100 * np.log(lo / prev_c),
                100 * np.log(c / prev_c),
                100 * np.log(h / lo),
                100 * np.log(c / o),
                np.log(v / _trailing_mean_before(v, VOLUME_N)),
                100 * np.log(c / _trailing_mean_before(c, TREND_N)),
            ],
            axis=1,
        )
    feats = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(feats, -CLIP, CLIP).astype(np.float32)


def rows(ohlcv: np.ndarray, start: int, end: int) -> np.ndarray:
    """Rows start..end−1 of `compute(ohlcv)`, bit for bit, computed from the candles they
    depend on only: what a pass needs for one chunk."""
    first = max(0, start - (LOOKBACK - 1))
    return compute(ohlcv[first:end])[start - first :]


def future_ohlc(ohlcv: np.ndarray, horizon: int) -> np.ndarray:
    """Targets of the ghost-candle head: for each candle t, the next `horizon` candles' OHLC as
    100·ln(price / close[t]) → (n, horizon, 4); NaN where those candles do not exist yet."""
    x = np.asarray(ohlcv, dtype=np.float64)
    n = len(x)
    out = np.full((n, horizon, 4), np.nan, dtype=np.float32)
    c = x[:, 3]
    for j in range(1, horizon + 1):
        if j >= n:
            break
        out[: n - j, j - 1, :] = 100 * np.log(x[j:, :4] / c[: n - j, None])
    return out
