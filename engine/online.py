"""What a learning mode trains on after each completed candle — one rule for live sessions and
for backtests that train a copy of the model.

`pivots_only`: one sample per newly confirmed pivot (swing low → BUY, swing high → SELL).
`every_candle`: one sample for candle t = newest − right, whose label is final now: its pivot
action if it is exactly one kind of pivot, else the next candle's move (±0.05 %).
Each sample's input window ends at its own candle; ghost targets use closed candles only.

The rule only makes samples; who applies them differs: a live session hands them to its
working model's trainer (and never waits), a backtest applies them to its private copy at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from contract.vocab import ACTIONS
from engine import features, labels
from engine.inference import context_size
from engine.model import ModelConfig
from engine.runner import IGNORE, Batch


@dataclass(frozen=True)
class Sample:
    """One labelled candle ready for a weight update."""

    batch: Batch
    source: str  # pivot, every_candle, every_candle_pivot, manual
    candle_ts: int
    label: str  # BUY, SELL or HOLD

    @property
    def event(self) -> dict:
        """The fields a training event records about this sample."""
        return {"candle_ts": self.candle_ts, "label": self.label}


class OnlineLearner:
    def __init__(self, config: ModelConfig, right: int) -> None:
        self.config, self.right = config, right
        self.context = context_size(config)

    def after_candle(self, mode: str, ohlcv: np.ndarray, found) -> list[Sample]:
        """The samples `mode` trains on once the last row of `ohlcv` (n, 6: OHLCV + ts) has
        closed, given the pivots that candle confirmed."""
        if mode == "pivots_only":
            return [
                self.sample(ohlcv, p.index, labels.pivot_action(p.kind), "pivot") for p in found
            ]
        if mode == "every_candle":
            t = len(ohlcv) - 1 - self.right
            if t < 0:
                return []
            kinds = {p.kind for p in found if p.index == t}
            if len(kinds) == 1:
                return [
                    self.sample(ohlcv, t, labels.pivot_action(kinds.pop()), "every_candle_pivot")
                ]
            label = labels.next_move(ohlcv[t, 3], ohlcv[t + 1, 3])
            return [self.sample(ohlcv, t, label, "every_candle")]
        return []

    def sample(self, ohlcv: np.ndarray, index: int, label: int, source: str) -> Sample:
        """The sample whose input window ends at candle `index`, labelled `label`."""
        lo = max(0, index + 1 - self.context)
        window = ohlcv[lo : index + 1, :5]
        x = torch.from_numpy(features.compute(window)).unsqueeze(0)
        y = torch.full((1, len(window)), IGNORE, dtype=torch.long)
        y[0, -1] = label
        ghost = torch.full((1, len(window), self.config.horizon, 4), float("nan"))
        future = features.future_ohlc(ohlcv[index:, :5], self.config.horizon)[0]
        ghost[0, -1] = torch.from_numpy(future)  # only candles that have closed (others NaN)
        return Sample(Batch(x, y, ghost), source, int(ohlcv[index, 5]), ACTIONS[label])
