"""The command contract: every command kind's payload, with the bounds the engine enforces.

Pages validate with the same models before they submit (`check`), and the engine parses what
it claims with `parse`, so a payload written straight to the table meets the same rules. Every
field is bounded — ids fit a database integer, numbers are finite and in range, strings and
lists have a length — and types are strict: `true` is not id 1, `"5"` is not 5. A refusal is
one short message naming the field (`describe`), never an echo of the input.
"""

from __future__ import annotations

import json
import reprlib
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract import vocab

MAX_ID = 2**31 - 1  # ids are INTEGER columns, on SQLite and PostgreSQL alike
MAX_SIGNALS = 1_000_000
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024  # MAX_SIGNALS signals fit (≈ 27 bytes each as JSON)
NAME_SUFFIX_CHARS = 40  # room the engine adds to a given name: " (stopped by engine shutdown)"
MAX_PROBLEMS_SHOWN = 3
MAX_INPUT_SHOWN = 60  # characters of an offending value quoted back
_REPR = reprlib.Repr()  # reprs of big lists and strings stop early (attributes: Python 3.11)
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 4, 4
_REPR.maxstring = _REPR.maxother = MAX_INPUT_SHOWN

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
TimeMs = Annotated[int, Field(ge=vocab.EARLIEST_MS, le=vocab.LATEST_MS)]


def text(max_chars: int, min_chars: int = 1):
    """A line of text: bounded, and without control characters (PostgreSQL refuses NUL, and
    nobody means a newline in a name)."""
    return Annotated[
        str, Field(min_length=min_chars, max_length=max_chars, pattern=r"^[^\x00-\x1f\x7f]*$")
    ]


TimeText = text(40)  # a date or ISO time
Symbol = text(vocab.SYMBOL_CHARS)
Timeframe = text(vocab.TIMEFRAME_CHARS)
ModelName = text(vocab.MODEL_NAME_CHARS - NAME_SUFFIX_CHARS)
ReportName = text(vocab.REPORT_NAME_CHARS)
Bps = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
Pivot = Annotated[int, Field(ge=1, le=200)]
Seconds = Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
Action = Literal[vocab.ACTIONS]
Mode = Literal[vocab.SESSION_MODES]


def _signals(items: list) -> list[tuple[int, str]]:
    """[[epoch ms, action], …], checked by hand so a million bad signals are one refusal, not a
    million validation errors (seconds and a gigabyte of them)."""
    for i, item in enumerate(items):
        if not (
            type(item) is list and len(item) == 2 and type(item[0]) is int
            and vocab.EARLIEST_MS <= item[0] <= vocab.LATEST_MS and item[1] in vocab.ACTIONS
        ):  # fmt: skip
            raise ValueError(
                f"signal {i} must be [epoch ms between 1900 and 2200, one of "
                f"{'/'.join(vocab.ACTIONS)}], got {quote(item)}"
            )
    return [(t, a) for t, a in items]


Signals = Annotated[list, Field(max_length=MAX_SIGNALS), AfterValidator(_signals)]


class Payload(BaseModel):
    """Base for payload models: unknown fields are an error, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- sessions ------------------------------------------------------------------------------


class FeedSpec(Payload):
    kind: Literal[vocab.FEED_KINDS] = "replay"
    pace_s: float = Field(default=1.0, ge=0, le=86_400, allow_inf_nan=False)
    start_ts: TimeMs | None = None  # replay: first candle to play (default: the first stored)
    exchange: text(40) | None = None  # a ccxt id
    poll_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)
    seed: Seed = 0  # synthetic
    count: int | None = Field(default=None, ge=1, le=100_000_000)

    @model_validator(mode="after")
    def _exchange_named(self):
        if self.kind == "exchange" and not self.exchange:
            raise ValueError("an exchange feed needs 'exchange', e.g. binance")
        return self


class SessionStart(Payload):
    symbol: Symbol
    timeframe: Timeframe
    mode: Mode = "none"
    # Which model: a checkpoint (default: the active one) — read frozen in mode `none`,
    # trained as a new working model in the learning modes — or an existing working model.
    checkpoint_id: Id | None = None
    working_model_id: Id | None = None
    frozen: bool | None = None  # default: frozen in mode none; False: a new working model
    feed: FeedSpec = FeedSpec()
    fee_bps: Bps = vocab.FEE_BPS
    slippage_bps: Bps = vocab.SLIPPAGE_BPS
    long_only: bool = False
    pivot_left: Pivot = vocab.PIVOT_LEFT
    pivot_right: Pivot = vocab.PIVOT_RIGHT

    @model_validator(mode="after")
    def _one_model(self):
        if self.working_model_id is not None and self.checkpoint_id is not None:
            raise ValueError("give a checkpoint or a working model, not both")
        if self.frozen and self.working_model_id is not None:
            raise ValueError("a working model is trainable: leave out 'frozen'")
        if self.frozen and self.mode != "none":
            raise ValueError(
                f"mode {self.mode!r} trains, and a frozen checkpoint never changes: use mode "
                "none, or leave out 'frozen' to train a new working model from the checkpoint"
            )
        return self


class SessionRef(Payload):
    session_id: Id


class SessionMode(SessionRef):
    mode: Mode


class SessionManual(SessionRef):
    action: Action


# -- backtests -----------------------------------------------------------------------------


class BacktestStart(Payload):
    symbol: Symbol
    timeframe: Timeframe
    start: TimeMs | TimeText | None = None  # epoch ms or a date / ISO time; default: first
    end: TimeMs | TimeText | None = None
    checkpoint_id: Id | None = None  # default: the active checkpoint (unless signals given)
    signals: Signals | None = None
    signals_name: text(255, min_chars=0) | None = None
    fee_bps: Bps = vocab.FEE_BPS
    slippage_bps: Bps = vocab.SLIPPAGE_BPS
    long_only: bool = False
    cash: float = Field(default=vocab.CASH, gt=0, le=1e15, allow_inf_nan=False)
    name: ReportName | None = None
    # Train a private copy of the checkpoint while replaying the range (the checkpoint itself
    # never changes); optionally keep the copy as a checkpoint.
    train_mode: Literal[vocab.BACKTEST_TRAIN_MODES] | None = None
    pivot_left: Pivot = vocab.PIVOT_LEFT
    pivot_right: Pivot = vocab.PIVOT_RIGHT
    save_trained: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        if self.signals is not None and self.checkpoint_id is not None:
            raise ValueError("give a checkpoint or signals, not both")
        if self.signals is not None and self.train_mode is not None:
            raise ValueError("training during a backtest needs a checkpoint, not signals")
        return self


# -- models --------------------------------------------------------------------------------


class DatasetRef(Payload):
    symbol: Symbol
    timeframe: Timeframe


class TrainStart(Payload):
    base_checkpoint: Id | None = None  # default: the active one
    working_model_id: Id | None = None  # train this working model instead of a new one
    epochs: int = Field(default=5, ge=1, le=500)
    batch_size: int = Field(default=8, ge=1, le=256)
    learning_rate: float = Field(default=1e-3, gt=0, le=1, allow_inf_nan=False)
    datasets: list[DatasetRef] | None = Field(default=None, max_length=1000)
    validation_split: float = Field(default=0.2, ge=0, le=0.5, allow_inf_nan=False)
    seq_len: int = Field(default=512, ge=64, le=8192)
    unannotated_as_hold: bool = False
    activate: bool = False
    name: ModelName | None = None

    @model_validator(mode="after")
    def _one_model(self):
        if self.base_checkpoint is not None and self.working_model_id is not None:
            raise ValueError("give a base checkpoint or a working model, not both")
        return self


class CheckpointRef(Payload):
    checkpoint_id: Id


class ModelSave(Payload):
    working_model_id: Id
    name: ModelName | None = None
    activate: bool = False


class Empty(Payload):
    """A command that takes no arguments."""


# -- debug (refused unless the engine runs with --debug-commands) ---------------------------


class DebugSleep(Payload):
    seconds: Seconds


class DebugFail(Payload):
    message: text(200, min_chars=0) = "deliberate failure"


class DebugLoad(Payload):
    rows_per_s: float = Field(default=200, gt=0, le=100_000, allow_inf_nan=False)
    seconds: float = Field(default=30, gt=0, le=3600, allow_inf_nan=False)


class DebugHoldLock(Payload):
    session_id: Id | None = None  # the working model this session trains
    working_model_id: Id | None = None
    checkpoint_id: Id | None = None  # every working model loaded here that started from it
    seconds: Seconds


PAYLOADS: dict[str, type[Payload]] = {
    "ping": Empty,
    "session.start": SessionStart,
    "session.stop": SessionRef,
    "session.set_mode": SessionMode,
    "session.train_manual": SessionManual,
    "backtest.start": BacktestStart,
    "train.start": TrainStart,
    "checkpoint.activate": CheckpointRef,
    "model.save": ModelSave,
    "debug.sleep": DebugSleep,
    "debug.fail": DebugFail,
    "debug.load": DebugLoad,
    "debug.load_stats": Empty,
    "debug.hold_lock": DebugHoldLock,
}


class PayloadError(ValueError):
    """A payload breaks the contract; the message is short and names the field."""


def quote(value: Any) -> str:
    """`value` as repr, cut to a length a message can carry (without building the repr of a
    million-item list first)."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_INPUT_SHOWN else text[: MAX_INPUT_SHOWN - 1] + "…"


def describe(err: ValidationError) -> str:
    """The first few problems, each naming its field, quoting at most a little of the input."""
    parts = []
    errors = err.errors(include_url=False)  # a handful: every list field is bounded or hand-checked
    for e in errors[:MAX_PROBLEMS_SHOWN]:
        where = ".".join(str(p) for p in e["loc"]) or "payload"
        if len(where) > MAX_INPUT_SHOWN or not where.isprintable():  # an unknown field's name
            where = quote(where)
        msg = e["msg"].removeprefix("Value error, ")
        shown = f" (got {quote(e['input'])})" if "input" in e and e["type"] != "missing" else ""
        parts.append(f"{where}: {msg}{shown}")
    if len(errors) > MAX_PROBLEMS_SHOWN:
        parts.append(f"and {len(errors) - MAX_PROBLEMS_SHOWN} more")
    return "; ".join(parts)


def parse(kind: str, raw: str | bytes | None) -> Payload:
    """The validated payload of `kind` from the JSON text a command carries (empty: `{}`).
    Raises PayloadError, or KeyError for a kind the contract does not know."""
    model = PAYLOADS[kind]
    raw = raw if raw and raw.strip() else "{}"
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"payload of {kind!r} is {len(raw):,} bytes; the limit is {MAX_PAYLOAD_BYTES:,}"
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            why = first["msg"].removeprefix("Invalid JSON: ")
            raise PayloadError(
                f"payload of {kind!r} is not valid JSON ({why}): {quote(raw)}; send a JSON "
                "object such as {}"
            ) from None
        if first["type"] == "model_type" and not first["loc"]:
            raise PayloadError(
                f"payload of {kind!r} must be a JSON object, got {quote(raw)}"
            ) from None
        raise PayloadError(f"invalid payload for {kind!r}: {describe(exc)}") from None


def check(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What a page is about to submit, checked against the contract: the payload as JSON-ready
    data with nothing the engine would refuse for its shape. Raises PayloadError."""
    try:
        text = json.dumps(payload, default=_plain)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"payload of {kind!r} cannot be sent as JSON: {exc}") from None
    return json.loads(parse(kind, text).model_dump_json(exclude_unset=True))


def _plain(value: Any) -> Any:
    """numpy scalars (a page's number_input, a frame's cell) as the Python numbers they hold."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


SUMMARY_CHARS = 300


def summarise(raw: str | None) -> str:
    """A command's payload as a line of the audit log: the JSON text, cut with its size."""
    raw = (raw or "{}").strip()
    if len(raw) <= SUMMARY_CHARS:
        return raw
    return f"{raw[: SUMMARY_CHARS - 40]}… ({len(raw):,} characters)"
