"""The Candle Lab engine: a headless service that claims commands from the database and runs
the work they ask for. Knows nothing of Streamlit."""

__version__ = "0.1.0"
