"""Who is at the keyboard: the sign-in page, one-time links, choosing a password, single
sign-on through Streamlit's `st.login`, and signing out (docs/access.md).

A signed-in browser holds a random token in the `candlelab_session` cookie; every full page
run looks it up in the database (`db.accounts.signed_in`), so an expired token, a disabled
account or a changed role counts at the next click. Streamlit reads cookies but cannot set
them, so a small script sets or clears it on the run after sign-in or sign-out.
"""

from __future__ import annotations

import json
import os
import time

import streamlit as st

from db import accounts
from db.models import Account
from pages.common import SESSION_TOKEN, current_actor, database, md_text, signed_in_account

COOKIE = "candlelab_session"
_TOKEN, _COOKIE_CHANGE = SESSION_TOKEN, "_signin_cookie_change"
_CHECKED_AT = "_signin_checked_at"


def address() -> str | None:
    """The browser's address, for the per-address sign-in limit and the audit log. Behind a
    reverse proxy Streamlit sees only the proxy (on loopback: no address at all); with
    CANDLELAB_TRUSTED_PROXY=1 the proxy's X-Real-IP header (or the last X-Forwarded-For hop,
    the one the proxy added) is used instead. Never trust those headers without a proxy that
    sets them: a browser could write any address there."""
    try:
        if os.environ.get("CANDLELAB_TRUSTED_PROXY") == "1":
            headers = st.context.headers
            forwarded = (headers.get("X-Forwarded-For") or "").split(",")[-1].strip()
            return headers.get("X-Real-IP") or forwarded or None
        return st.context.ip_address
    except Exception:
        return None


def current() -> Account | None:
    """The signed-in account of this browser, from the database; None if signed out."""
    token = st.session_state.get(_TOKEN) or st.context.cookies.get(COOKIE)
    account = signed_in_account(token, max_age_s=0)  # afresh, for the page's checks too
    if account is None:
        st.session_state.pop(_TOKEN, None)
        if token and st.context.cookies.get(COOKIE):
            st.session_state[_COOKIE_CHANGE] = "clear"  # a stale cookie: drop it
        if token and st.user.get("is_logged_in"):
            st.logout()  # an expired or ended single-sign-on session: sign in at the provider again
        account = _single_sign_on()
    else:
        st.session_state[_TOKEN] = token
    return account


def sso_providers() -> list[str | None]:
    """The OpenID Connect providers configured in `.streamlit/secrets.toml` ([auth]): their
    names, or [None] for a single unnamed one; [] when single sign-on is off."""
    try:
        conf = st.secrets.get("auth")
    except Exception:  # no secrets file at all
        return []
    if not conf:
        return []
    named = [k for k, v in conf.items() if hasattr(v, "items")]
    return named or ([None] if "client_id" in conf else [])


def _single_sign_on() -> Account | None:
    """A browser Streamlit's st.login signed in: the account with that e-mail, opened as a
    Candle Lab session once (then the cookie carries it)."""
    if not sso_providers() or not st.user.get("is_logged_in"):
        return None
    email = st.user.get("email")
    if not email or st.session_state.get("_sso_refused") == email:
        return None
    verified = st.user.get("email_verified") is True
    outcome = accounts.sign_in_by_email(database(), email, verified, address())
    if outcome.token is None:
        st.session_state["_sso_refused"] = email
        st.session_state["_signin_error"] = outcome.error
        return None
    _keep(outcome.token)
    return accounts.signed_in(database(), outcome.token)


def _keep(token: str) -> None:
    st.session_state[_TOKEN] = token
    st.session_state[_COOKIE_CHANGE] = "set"


def sync_cookie() -> None:
    """Set or clear the session cookie if sign-in or sign-out asked for it (one script)."""
    change = st.session_state.pop(_COOKIE_CHANGE, None)
    if change is None:
        return
    token = st.session_state.get(_TOKEN) if change == "set" else None
    age = int(accounts.session_hours() * 3600) if token else 0
    cookie = json.dumps(f"{COOKIE}={token or ''}; path=/; max-age={age}; SameSite=Strict")
    st.html(
        f"<script>document.cookie = {cookie} + "
        "(location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True,
    )


def redeem_link_in_url() -> None:
    """Sign in with a one-time link (`?signin=TOKEN`), then take the token out of the URL."""
    token = st.query_params.get("signin")
    if not token:
        return
    del st.query_params["signin"]
    outcome = accounts.redeem_link(database(), token, address())
    if outcome.token:
        _keep(outcome.token)
    else:
        st.session_state["_signin_error"] = outcome.error


def watch_session(every_s: float = 0.0) -> None:
    """At each sidebar refresh (`common.refresh_sidebar`), and from the Live panel: once this
    browser's session has ended (signed out in another tab, expired, the account disabled or
    reset), rerun the app, which shows the sign-in page, so nothing keeps streaming to a
    browser that is no longer signed in. `every_s`: read the sign-in at most that often (a
    caller that reruns more often: each read is a query)."""
    now = time.monotonic()
    if now - st.session_state.get(_CHECKED_AT, -float("inf")) < every_s:
        return
    st.session_state[_CHECKED_AT] = now
    if st.session_state.get(_TOKEN) and current_actor() is None:
        st.session_state["_signin_notice"] = (
            "You were signed out: your session ended in another tab, expired, or an admin "
            "changed your account."
        )
        st.rerun(scope="app")


def sign_in_page() -> None:
    """The only page a signed-out browser reaches (at every page's address)."""
    st.title("Candle Lab")
    st.subheader("Sign in")
    if error := st.session_state.pop("_signin_error", None):
        st.error(md_text(error))
    if notice := st.session_state.pop("_signin_notice", None):
        st.info(notice)
    with st.form("signin", border=True, width=420):
        name = st.text_input("Account name", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        if st.form_submit_button("Sign in", type="primary"):
            outcome = accounts.sign_in(database(), name, password, address())
            if outcome.token:
                _keep(outcome.token)
                st.rerun()
            st.error(md_text(outcome.error))
    for provider in sso_providers():
        label = f"Sign in with {provider}" if provider else "Sign in with single sign-on"
        if st.button(label, key=f"sso_{provider}"):
            st.login(provider) if provider else st.login()
    st.caption(
        "No account yet? An admin adds you and gives you a one-time sign-in link. The first "
        "admin's link is printed in the terminal that started Candle Lab."
    )


def choose_password_page(account: Account) -> None:
    """After a one-time link: the person chooses a password before anything else."""
    st.title("Choose a password")
    st.write(f"Signed in as **{md_text(account.name)}** ({account.role}) with a one-time link.")
    with st.form("choose_password", width=420):
        first = st.text_input("New password", type="password", autocomplete="new-password",
                              help=f"At least {accounts.MIN_PASSWORD_CHARS} characters.")  # fmt: skip
        again = st.text_input("The same again", type="password", autocomplete="new-password")
        if st.form_submit_button("Save password", type="primary"):
            if first != again:
                st.error("The two passwords differ.")
            else:
                try:
                    accounts.set_password(database(), account.name, first)
                    st.rerun()
                except accounts.AccountError as exc:
                    st.error(md_text(str(exc)))


def sign_out() -> None:
    """End this browser's session (and Streamlit's single sign-on, if that was how)."""
    accounts.sign_out(database(), st.session_state.pop(_TOKEN, None))
    st.session_state[_COOKIE_CHANGE] = "clear"
    if st.user.get("is_logged_in"):
        st.logout()
    st.rerun()
