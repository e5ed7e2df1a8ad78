"""Live candle sources behind one interface (`Feed`): replay, exchange (ccxt), synthetic."""

from engine.feeds.base import Bar, Feed, FeedError
from engine.feeds.exchange import ExchangeFeed
from engine.feeds.replay import ReplayFeed
from engine.feeds.synthetic import SyntheticFeed

__all__ = ["Bar", "ExchangeFeed", "Feed", "FeedError", "ReplayFeed", "SyntheticFeed"]
