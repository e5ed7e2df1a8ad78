"""Live sessions: a model on a feed, one thread each, in one of the four live modes.

Per completed candle, in this order: predict from the latest published snapshot; fill the
previous signal at this candle's open and mark the position at its close (engine/account.py:
the fill rule of engine/fills.py, fees and slippage included, that backtests share); find the
pivots this candle confirms; store all of it in one transaction (engine crash or not, a stored
prediction is the one its fills followed); then, in a learning mode, hand the candle's
training samples to the working model's trainer and move on. The loop never waits for the
training lock: a busy lock makes samples queue, not candles.

A session reads either a frozen checkpoint (mode `none`: inference only; the checkpoint never
changes) or a working model (engine/working.py), which learning sessions, manual training and
batch jobs may share: all their updates go through its one trainer and lock. Each session has
its own account and pivot detector.

Labels never use a candle that has not closed: in `every_candle`, candle t is trained on at
the close of t + right (by then its pivot status and the next candle's move are known).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from contract.vocab import ACTIONS, FEE_BPS, PIVOT_LEFT, PIVOT_RIGHT
from db import candles as candle_rows
from db import sessions as session_rows
from engine import features, pivots, priority
from engine.account import Account
from engine.feeds import Bar, Feed, FeedError, ReplayFeed, SyntheticFeed
from engine.feeds.exchange import ExchangeFeed, make_client
from engine.inference import context_size
from engine.online import OnlineLearner, Sample
from engine.pool import FrozenModel, WorkingModelElsewhere
from engine.working import WorkingModel

log = logging.getLogger(__name__)


def make_feed(ctx, symbol: str, timeframe: str, spec: dict | None) -> Feed:
    """The feed a session asks for (its row's `feed` spec); FeedError if it cannot be had."""
    spec = spec or {}
    kind = spec.get("kind", "replay")
    if kind == "replay":
        return ReplayFeed(ctx.db, symbol, timeframe, pace_s=spec.get("pace_s", 1.0),
                          start_ts=spec.get("start_ts"))  # fmt: skip
    if kind == "synthetic":
        return SyntheticFeed(symbol, timeframe, seed=spec.get("seed", 0),
                             count=spec.get("count"), pace_s=spec.get("pace_s", 1.0))  # fmt: skip
    if kind == "exchange":
        client = make_client(spec["exchange"], spec.get("options"))
        return ExchangeFeed(client, symbol, timeframe, poll_s=spec.get("poll_s"))
    raise FeedError(f"unknown feed kind {kind!r}: use replay, exchange or synthetic")


class LiveSession:
    def __init__(self, ctx, row, model: FrozenModel | WorkingModel, feed: Feed) -> None:
        self.ctx, self.db, self.id = ctx, ctx.db, row.id
        self.model, self.feed = model, feed
        self.mode, self.checkpoint_id, self.created_by = row.mode, row.checkpoint_id, row.created_by
        s = row.settings or {}
        self.left = int(s.get("pivot_left", PIVOT_LEFT))
        self.right = int(s.get("pivot_right", PIVOT_RIGHT))
        self.account = (
            Account.from_state(row.state)
            if row.state
            else Account(
                fee_bps=float(s.get("fee_bps", FEE_BPS)),
                long_only=bool(s.get("long_only", False)),
                slippage_bps=float(s.get("slippage_bps", 0.0)),  # none before it was a setting
            )
        )
        self.context = context_size(model.config)
        self.learner = OnlineLearner(model.config, self.right)
        self.dropped_before = row.samples_dropped  # by earlier runs (before a restart)
        keep = self.context + self.right + features.LOOKBACK + 8
        self.bars: deque[Bar] = deque(maxlen=keep)
        self.last_ts = row.last_ts
        self.stop_event = threading.Event()
        self.store_candles = (row.feed or {}).get("kind") == "exchange"
        self.symbol, self.timeframe = row.symbol, row.timeframe
        self.thread = threading.Thread(target=self._run, name=f"session-{row.id}", daemon=True)
        self._preload(row)

    @property
    def working(self) -> WorkingModel | None:
        """The working model this session trains, or None (a frozen checkpoint)."""
        return self.model if isinstance(self.model, WorkingModel) else None

    def attach(self, model: WorkingModel) -> None:
        """Train `model` from the next candle on (a frozen session switched to learning)."""
        self.ctx.models.retain(model)
        self.model = model

    def _preload(self, row) -> None:
        """History before the first live candle, so the first predictions have full context."""
        spec = row.feed or {}
        upto = self.last_ts if self.last_ts is not None else spec.get("start_ts")
        if spec.get("kind", "replay") == "synthetic":
            return
        if upto is None:
            return  # the replay starts at the first stored candle: no history before it
        end = upto if self.last_ts is not None else upto - 1
        df = candle_rows.load(self.db, row.symbol, row.timeframe, end_ms=end, last=self.bars.maxlen)
        for r in df.itertuples():
            self.bars.append(Bar(int(r.ts), r.open, r.high, r.low, r.close, r.volume))

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def _run(self) -> None:
        priority.inference_thread()
        owner = self.ctx.instance_id
        try:
            for bar in self.feed.bars(self.stop_event, after_ts=self.last_ts):
                self.on_bar(bar, bar.arrived if bar.arrived is not None else time.monotonic())
                if self.stop_event.is_set():
                    break
        except session_rows.NotOwner:
            log.warning("session %s: another engine runs it now; this one lets go", self.id)
            self._let_go()
            return
        except Exception as exc:
            log.exception("session %s failed", self.id)
            session_rows.close(self.db, self.id, "failed", f"{type(exc).__name__}: {exc}", owner)
            self._end_learning("failed")
            return
        if self.ctx.stopping.is_set():
            return  # the engine is shutting down: leave it running, to be resumed
        status = "stopped" if self.stop_event.is_set() else "finished"
        session_rows.close(self.db, self.id, status, owner=owner)
        self._end_learning(status)

    def on_bar(self, bar: Bar, received: float) -> None:
        """Everything one completed candle does (module docstring for the order)."""
        self.bars.append(bar)
        ohlcv = self._ohlcv()
        snap = self.model.snapshot
        pred = snap.predict_last(ohlcv)
        trades = self.account.open_bar(bar.ts, bar.open)
        self.account.mark(bar.close)
        self.account.signal(pred.action)
        found = pivots.confirmed_at(ohlcv[:, 1], ohlcv[:, 2], len(ohlcv), self.left, self.right)
        working = self.working
        samples = self.learner.after_candle(self.mode, ohlcv, found) if working else []
        session_rows.record_candle(
            self.db, self.id, received=received, last_ts=bar.ts, state=self.account.state(),
            trades=trades, learning=self.queue_counts(working), candle=self._live_candle(bar),
            prediction={
                "ts": bar.ts, "action": pred.action, "p_buy": pred.probs["BUY"],
                "p_sell": pred.probs["SELL"], "p_hold": pred.probs["HOLD"],
                "confidence": pred.confidence, "ghost": {"ohlc": np.round(pred.ghost, 8).tolist()},
                "model_step": snap.step,
            },
            pivots=[
                {"ts": int(ohlcv[p.index, 5]), "kind": p.kind, "price": p.price,
                 "confirmed_ts": bar.ts}
                for p in found
            ], owner=self.ctx.instance_id,
        )  # fmt: skip
        self.last_ts = bar.ts
        for sample in samples:
            working.offer(
                sample, session_id=self.id, operation=f"session {self.id} {sample.source}"
            )

    def queue_counts(self, working: WorkingModel | None) -> dict[str, int]:
        if working is None:
            return {}
        return {
            "samples_waiting": working.trainer.waiting(self.id),
            "samples_dropped": self.dropped_before + working.trainer.dropped(self.id),
        }

    def _ohlcv(self) -> np.ndarray:
        """(n, 6): open, high, low, close, volume, ts of the buffered candles."""
        bars = list(self.bars)  # one atomic copy: the command thread may read while we append
        return np.array([(b.open, b.high, b.low, b.close, b.volume, b.ts) for b in bars])

    # -- manual mode --------------------------------------------------------------------------

    def manual_sample(self, action: str) -> Sample:
        """The latest completed candle labelled `action` (manual mode)."""
        ohlcv = self._ohlcv()
        if not len(ohlcv):
            raise ValueError(f"session {self.id} has not received a candle yet")
        return self.learner.sample(ohlcv, len(ohlcv) - 1, ACTIONS.index(action), "manual")

    # -- persistence ----------------------------------------------------------------------------

    def _live_candle(self, bar: Bar):
        """An exchange feed's candle is stored with what it did (replayed ones already are)."""
        if not self.store_candles:
            return None
        return candle_rows.live_insert(self.db, self.symbol, self.timeframe, bar.ts,
                                       (bar.open, bar.high, bar.low, bar.close, bar.volume))  # fmt: skip

    def _let_go(self) -> None:
        """Another engine resumed this session (this one was taken for dead): drop the working
        model without saving anything of it — the new owner has it."""
        if self.working is not None:
            self.ctx.models.release(self.working)

    def _end_learning(self, status: str) -> None:
        """A learning session that ends leaves its learning as a checkpoint people can
        backtest (queued after its last samples, written only if the weights moved), and lets
        go of its working model."""
        working = self.working
        if working is None:
            return
        saved = working.save_checkpoint(name=f"W{working.id} after session {self.id} ({status})",
                                        created_by=self.created_by, only_if_changed=True)  # fmt: skip
        # Queued after this session's samples: once it is written they are all applied or
        # dropped, and the session's counts are final.
        saved.add_done_callback(
            lambda _: session_rows.update_row(self.db, self.id, **self.queue_counts(working))
        )
        self.ctx.models.release(working)


class SessionManager:
    """The engine's running sessions."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.sessions: dict[int, LiveSession] = {}
        self.lock = threading.Lock()

    def model_for(self, row) -> FrozenModel | WorkingModel:
        """What a session row reads: its working model, a new one for a learning session that
        has none (a session started before working models existed), or its frozen checkpoint."""
        if row.working_model_id is not None:
            return self.ctx.models.working(row.working_model_id)
        if row.mode != "none":
            model = self.ctx.models.new_working(row.checkpoint_id, created_by=row.created_by)
            session_rows.update_row(self.ctx.db, row.id, working_model_id=model.id)
            return model
        return self.ctx.models.frozen(row.checkpoint_id)

    def launch(self, row, feed: Feed | None = None) -> LiveSession:
        """Run session `row` here, on `feed` if one is made already."""
        feed = feed or make_feed(self.ctx, row.symbol, row.timeframe, row.feed)
        session = LiveSession(self.ctx, row, self.model_for(row), feed)
        if session.working is not None:
            self.ctx.models.retain(session.working)
        with self.lock:
            self.sessions[row.id] = session
        session.start()
        return session

    def get(self, session_id: int) -> LiveSession | None:
        with self.lock:
            s = self.sessions.get(session_id)
        return s if s and s.thread.is_alive() else None

    def room(self) -> bool:
        """Whether this engine may run one more session (`serve --max-sessions`)."""
        limit = self.ctx.settings.max_sessions
        with self.lock:
            running = sum(1 for s in self.sessions.values() if s.thread.is_alive())
        return limit is None or running < limit

    def resume_orphans(self) -> list[int]:
        """Sessions left running by an engine that is gone (crashed, stopped for a restart, or
        found dead) continue here from their last processed candle, as many as this engine
        has room for (those on a working model it holds, always: one model, one trainer).
        When several engines try at once, each session goes to one of them."""
        resumed: list[int] = []
        db, me = self.ctx.db, self.ctx.instance_id
        for row in session_rows.orphans(db, me):
            if self.ctx.stopping.is_set():
                break
            holds_model = row.working_model_id in {m.id for m in self.ctx.models.loaded()}
            if not (holds_model or self.room()):
                continue
            if not session_rows.take_over(db, row.id, row.engine_id, me):
                continue  # another engine took it first
            try:
                self.launch(session_rows.get(db, row.id))
                resumed.append(row.id)
            except WorkingModelElsewhere:  # its model went to another engine meanwhile
                session_rows.hand_back(db, row.id, me, row.engine_id)  # which resumes it
            except Exception as exc:
                session_rows.close(db, row.id, "interrupted", f"could not resume: {exc}", me)
        return resumed

    def record_queue_counts(self) -> None:
        """After the trainers stopped: what each session's samples came to (applied, or
        dropped when the trainer could not finish them)."""
        with self.lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            counts = s.queue_counts(s.working)
            if counts:
                session_rows.update_row(self.ctx.db, s.id, **counts)

    def stop_all(self, timeout: float = 30) -> None:
        with self.lock:
            running = list(self.sessions.values())
        for s in running:
            s.stop()
        for s in running:
            s.thread.join(timeout)
