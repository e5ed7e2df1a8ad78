"""Candle Lab in the browser: `streamlit run streamlit_app.py`.

The views hold no model and no business state: they read the database and write commands
(and user-owned rows such as imported candles) through `db/`. Nothing but the sign-in page is
reachable until a browser signs in (pages/auth.py); the pages listed depend on the role.
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from pages import auth
from pages.common import sidebar

# Pages are listed below with st.navigation; keep Streamlit from also auto-discovering pages/
# (see scripts/streamlit_server.py, which sets this before the server starts).
PagesManager.uses_pages_directory = False


st.set_page_config(page_title="Candle Lab", page_icon="🕯️", layout="wide")

auth.redeem_link_in_url()
account = auth.current()
auth.sync_cookie()
if account is None:
    st.navigation([st.Page(auth.sign_in_page, title="Sign in", icon=":material/login:")]).run()
    st.stop()
if account.must_set_password and account.method != "sso":
    st.navigation([st.Page(lambda: auth.choose_password_page(account), title="Choose a password",
                           icon=":material/password:")]).run()  # fmt: skip
    st.stop()

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/live.py", title="Live", icon=":material/monitoring:"),
    st.Page("pages/annotate.py", title="Annotate", icon=":material/edit_note:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/backtest.py", title="Backtest", icon=":material/query_stats:"),
    st.Page("pages/report.py", title="Report", icon=":material/article:"),
    st.Page("pages/data.py", title="Data", icon=":material/upload_file:"),
]
if account.role == "admin":
    pages += [
        st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
        st.Page("pages/audit.py", title="Audit", icon=":material/policy:"),
    ]
nav = st.navigation(pages)
sidebar()
nav.run()
