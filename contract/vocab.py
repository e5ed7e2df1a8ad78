"""The shared vocabularies and defaults: every list of modes, actions and statuses, and every
default a page shows and the engine applies, defined once.

Imported by `db/`, `engine/` and `pages/` alike, so it imports nothing but the standard library.
"""

from __future__ import annotations

ACTIONS = ("BUY", "SELL", "HOLD")  # the model's three outputs, in its output order
SIDES = ("long", "short")  # an annotated trade

SESSION_MODES = ("none", "pivots_only", "every_candle", "manual")
LEARNING_MODES = tuple(m for m in SESSION_MODES if m != "none")
MODE_TITLES = {
    "none": "Live Inference (No Training)",
    "pivots_only": "Live Inference + Pivot Training",
    "every_candle": "Live Inference + Per-Candle Training",
    "manual": "Manual mode (Train on Current Candle)",
}
MODE_SHORT = {"none": "Inference", "pivots_only": "Pivots", "every_candle": "Per-candle",
              "manual": "Manual"}  # fmt: skip
BACKTEST_TRAIN_MODES = ("pivots_only", "every_candle")
FEED_KINDS = ("replay", "exchange", "synthetic")

COMMAND_STATUSES = ("pending", "running", "done", "failed", "cancelled")
COMMAND_FINAL = ("done", "failed", "cancelled")
# Commands that start a background job: an engine takes them only while it has a free job slot
# (`serve --max-jobs`), so a queue of them spreads over the engines with room.
JOB_KINDS = ("backtest.start", "train.start")
MAX_JOBS = 4  # an engine's default number of job slots (`serve --max-jobs`)
# Payload fields that name what a command is about: such a command runs on the engine that owns
# that session or working model (db/routing.py).
SUBJECT_FIELDS = ("session_id", "working_model_id")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
AUDIT_OUTCOMES = ("ok", "refused", "failed")
SESSION_STATUSES = ("running", "stopped", "finished", "failed", "interrupted")

# Lengths of what people name, as the database columns store them.
SYMBOL_CHARS = 64
TIMEFRAME_CHARS = 16
PERSON_CHARS = 80
EMAIL_CHARS = 254  # RFC 5321's longest address
MODEL_NAME_CHARS = 120  # a checkpoint's or working model's name
REPORT_NAME_CHARS = 200  # a backtest report's name

# Trading defaults, the same for live sessions and backtests.
FEE_BPS = 10.0
SLIPPAGE_BPS = 0.0
CASH = 10_000.0
PIVOT_LEFT = 5
PIVOT_RIGHT = 5

# Times a command accepts, epoch ms: 1900-01-01 to 2200-01-01. Older or later times are typing
# errors or unit mix-ups (seconds read as ms), not market data. Imported files are held to the
# same floor and to a few years from now (market/times.py).
EARLIEST_MS = -2_208_988_800_000
LATEST_MS = 7_258_118_400_000
