"""`streamlit run streamlit_app.py ARGS`, with Streamlit's legacy page discovery switched off.

Streamlit 1.67 puts any app that has a `pages/` folder beside its main script into the old
multipage mode (`PagesManager.uses_pages_directory`), which runs `pages/data.py` on its own
when someone opens /data directly, bypassing `st.navigation` (no sidebar, no shared set-up).
Our views live in `pages/` by design and are listed explicitly with `st.navigation`, so this
launcher pins the flag off before the server starts. `streamlit_app.py` does the same for a
plain `streamlit run`, where it can only take effect after the first page load.

It also polls the config and secrets files Streamlit watches every 5 s instead of every 0.2 s:
Streamlit polls them whatever `server.fileWatcherType` says, each poll a task on a thread pool,
and with no tab open that was most of the app's CPU (about 0.4 % of a core; bench/dashboard.py).
A change to `.streamlit/config.toml` or `secrets.toml` is then picked up within 5 s.

And it runs the app at a lower priority than the engine (niceness +APP_NICENESS): a tab's script
run must never delay a live session's candle -> prediction, and on a machine that runs both, a
busy core otherwise goes to whichever woke first.
"""

import os
import sys

from streamlit.runtime.pages_manager import PagesManager
from streamlit.watcher import polling_path_watcher
from streamlit.web.cli import main

APP_NICENESS = 5

PagesManager.uses_pages_directory = False
polling_path_watcher._POLLING_PERIOD_SECS = 5.0  # read at each poll

if __name__ == "__main__":
    os.nice(APP_NICENESS)
    sys.argv = ["streamlit", "run", "streamlit_app.py", *sys.argv[1:]]
    sys.exit(main())
