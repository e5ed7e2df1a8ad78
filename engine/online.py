"""What a learning mode trains on after each completed candle — one rule for live sessions and
for backtests that train a copy of the model.

`pivots_only`: one step per newly confirmed pivot (swing low → BUY, swing high → SELL).
`every_candle`: one step for candle t = newest − right, whose label is final now: its pivot
action if it is exactly one kind of pivot, else the next candle's move (±0.05 %).
Each sample's input window ends at its own candle; ghost targets use closed candles only.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from engine import features, labels
from engine.inference import context_size
from engine.lock import TrainingLockTimeout
from engine.model import ACTIONS
from engine.runner import IGNORE, Batch, ModelRunner

log = logging.getLogger(__name__)


class OnlineLearner:
    def __init__(self, runner: ModelRunner, right: int, operation: str, **event) -> None:
        self.runner, self.right = runner, right
        self.operation, self.event = operation, event
        self.context = context_size(runner.config)

    def after_candle(self, mode: str, ohlcv: np.ndarray, found) -> int:
        """Train as `mode` asks after the last row of `ohlcv` (n, 6: OHLCV + ts) closed, given
        the pivots it confirmed; returns the steps taken."""
        if mode == "pivots_only":
            return sum(
                self.train(ohlcv, p.index, labels.pivot_action(p.kind), "pivot") for p in found
            )
        if mode == "every_candle":
            t = len(ohlcv) - 1 - self.right
            if t < 0:
                return 0
            kinds = {p.kind for p in found if p.index == t}
            if len(kinds) == 1:
                return self.train(ohlcv, t, labels.pivot_action(kinds.pop()), "every_candle_pivot")
            label = labels.next_move(ohlcv[t, 3], ohlcv[t + 1, 3])
            return self.train(ohlcv, t, label, "every_candle")
        return 0

    def train(self, ohlcv: np.ndarray, index: int, label: int, source: str) -> int:
        """One step on the sample whose window ends at candle `index`; 1 if taken, 0 if the
        lock timed out (recorded as a skipped step)."""
        lo = max(0, index + 1 - self.context)
        window = ohlcv[lo : index + 1, :5]
        x = torch.from_numpy(features.compute(window)).unsqueeze(0)
        y = torch.full((1, len(window)), IGNORE, dtype=torch.long)
        y[0, -1] = label
        ghost = torch.full((1, len(window), self.runner.config.horizon, 4), float("nan"))
        future = features.future_ohlc(ohlcv[index:, :5], self.runner.config.horizon)[0]
        ghost[0, -1] = torch.from_numpy(future)  # only candles that have closed (others NaN)
        try:
            self.runner.train_step(
                Batch(x, y, ghost),
                operation=f"{self.operation} {source}",
                source=source,
                candle_ts=int(ohlcv[index, 5]),
                label=ACTIONS[label],
                **self.event,
            )
        except TrainingLockTimeout as exc:
            log.warning("%s skipped a step: %s", self.operation, exc)
            return 0
        return 1
