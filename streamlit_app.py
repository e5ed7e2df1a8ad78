"""Candle Lab in the browser: `streamlit run streamlit_app.py`.

The views hold no model and no business state: they read the database and write commands
(and user-owned rows such as imported candles) through `db/`. Nothing but the sign-in page is
reachable until a browser signs in (pages/auth.py): every page's address then shows it, so a
bookmark opens its page once signed in. Admin and Audit are listed for the roles that may use
them; the pages themselves refuse everyone else.
"""

from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from contract.access import can
from pages import auth
from pages.common import SIDEBAR_REFRESH_S, sidebar

# Pages are listed below with st.navigation; keep Streamlit from also auto-discovering pages/
# (see scripts/streamlit_server.py, which sets this before the server starts).
PagesManager.uses_pages_directory = False

PAGES = [  # file, title, icon, the action whose role sees it listed
    ("pages/home.py", "Home", ":material/home:", None),
    ("pages/live.py", "Live", ":material/monitoring:", None),
    ("pages/annotate.py", "Annotate", ":material/edit_note:", None),
    ("pages/train.py", "Train", ":material/model_training:", None),
    ("pages/backtest.py", "Backtest", ":material/query_stats:", None),
    ("pages/report.py", "Report", ":material/article:", None),
    ("pages/data.py", "Data", ":material/upload_file:", None),
    ("pages/admin.py", "Admin", ":material/admin_panel_settings:", "account.manage"),
    ("pages/audit.py", "Audit", ":material/policy:", "audit.read"),
]

# Pages whose own refresh checks the sign-in refresh the sidebar less often (seconds): the Live
# panel reruns every second and checks it every SIDEBAR_REFRESH_S, and with the sidebar every
# 2 s, a third of the Live page's script runs were the sidebar's (bench/dashboard.py). A Live
# page with no session to show has no panel: its sign-in check comes with the sidebar's.
REFRESH_SIDEBAR_EVERY_S = {"live": 10.0}


def only(page_fn, title: str, icon: str) -> None:
    """Show `page_fn` at every page's address (signed out, or a password still to choose)."""
    st.navigation(
        [st.Page(page_fn, title=title, icon=icon, url_path=Path(file).stem, default=i == 0)
         for i, (file, *_) in enumerate(PAGES)],
        position="hidden",
    ).run()  # fmt: skip
    st.stop()


st.set_page_config(page_title="Candle Lab", page_icon="🕯️", layout="wide")

auth.redeem_link_in_url()
account = auth.current()
auth.sync_cookie()
if account is None:
    only(auth.sign_in_page, "Sign in", ":material/login:")
if account.must_set_password and account.method != "sso":
    only(lambda: auth.choose_password_page(account), "Choose a password", ":material/password:")

nav = st.navigation(
    [st.Page(file, title=title, icon=icon, default=i == 0,
             visibility="visible" if need is None or can(account.role, need) else "hidden")
     for i, (file, title, icon, need) in enumerate(PAGES)]
)  # fmt: skip
sidebar(REFRESH_SIDEBAR_EVERY_S.get(nav.url_path, SIDEBAR_REFRESH_S))
nav.run()
