"""Admin: the people who may sign in, their roles and one-time links, and the per-role quotas.

Every change goes through `db.accounts` / `db.quotas`, which check again that the signed-in
account is an admin (inside the write's transaction) and record it in the audit log."""

from __future__ import annotations

from urllib.parse import urlsplit

import pandas as pd
import streamlit as st

from contract.access import QUOTAS, ROLES, SYSTEM_ACCOUNT
from db import accounts, quotas
from pages.common import allowed, current_user, database, md_text

engine = database()
st.title("Admin")
if not allowed("account.manage"):
    st.error("Only admins can manage accounts and quotas.")
    st.stop()

LINK = "admin_link"  # the one-time link just made: (name, url), shown until dismissed


def app_url() -> str:
    """This app's address as the browser reached it (scheme, host and the server's base path),
    for links that sign a person in."""
    parts = urlsplit(st.context.url or "")
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"{parts.scheme}://{parts.netloc}" + (f"/{base}" if base else "")


def keep_link(name: str, token: str) -> None:
    """Remember the new one-time link for the next run (it cannot be shown again later)."""
    st.session_state[LINK] = (name, f"{app_url()}/?signin={token}")


def show_link() -> None:
    """The last one-time link, to copy and hand over; the database keeps only its hash."""
    if LINK not in st.session_state:
        return
    name, url = st.session_state[LINK]
    st.success(
        f"One-time sign-in link for **{md_text(name)}** (valid {accounts.LINK_HOURS} h, works "
        "once; it is not stored, so copy it now). Opening it lets them choose a password."
    )
    st.code(url, language=None, wrap_lines=True)
    if st.button("Done, hide the link"):
        del st.session_state[LINK]
        st.rerun()


def password_state(a) -> str:
    if a.name == SYSTEM_ACCOUNT:
        return "cannot sign in (engine host)"
    if a.must_set_password:
        return "link pending"
    return "set" if a.password_hash else "single sign-on only"


def people_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "name": a.name,
                "role": a.role,
                "e-mail": a.email,
                "state": "disabled" if a.disabled else "enabled",
                "password": password_state(a),
                "last sign-in (UTC)": a.last_signin_at,
                "created by": a.created_by,
                "created (UTC)": a.created_at,
            }
            for a in rows
        ]
    )


def attempt(change) -> None:
    """Run a change that returns what it did (`db` calls return None: `call() or "words"`); on
    success say so after redrawing the page, otherwise say why not (never a traceback)."""
    try:
        done = change()
    except (accounts.AccountError, accounts.Refused) as exc:
        st.error(md_text(str(exc)))
        return
    st.session_state["admin_done"] = done
    st.rerun()


def add_form() -> None:
    """A refused add keeps what was typed (fix and resend); a new form after each success."""
    with st.form(f"add_person_{st.session_state.get('admin_adds', 0)}"):
        c1, c2, c3 = st.columns([2, 1.3, 2])
        name = c1.text_input("Name", max_chars=64, help="Lower case letters, digits and . _ @ -")
        role = c2.selectbox("Role", ROLES, index=ROLES.index("trader"))
        email = c3.text_input("E-mail (optional)", help="For single sign-on, if configured.")
        if st.form_submit_button("Add", type="primary"):
            st.session_state.pop(LINK, None)  # the previous person's link is not this one's
            attempt(lambda: add(name, role, email))


def add(name: str, role: str, email: str) -> str:
    token = accounts.add(engine, name, role, by=current_user(), email=email or None)
    keep_link(accounts.clean_name(name), token)
    st.session_state["admin_adds"] = st.session_state.get("admin_adds", 0) + 1
    return f"Added {accounts.clean_name(name)} as {role}."


def change_panel(people) -> None:
    names = [a.name for a in people if a.name != SYSTEM_ACCOUNT]
    picked = st.selectbox("Account", names, index=None, placeholder="Choose a person…")
    if picked is None:
        return
    a = next(p for p in people if p.name == picked)
    me = current_user()
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    role = c1.selectbox("New role", ROLES, index=ROLES.index(a.role), key=f"role_{a.name}")
    if c2.button("Apply role", disabled=role == a.role, width="stretch"):
        attempt(lambda: accounts.change(engine, a.name, by=me, role=role)
                or f"{a.name} is now {role}.")  # fmt: skip
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    email = c1.text_input("E-mail", value=a.email or "", key=f"email_{a.name}",
                          help="Empty clears it.")  # fmt: skip
    if c2.button("Set e-mail", width="stretch"):  # never disabled: typing commits on blur
        attempt(lambda: accounts.change(engine, a.name, by=me, email=email)
                or f"E-mail of {a.name} set.")  # fmt: skip
    c1, c2 = st.columns(2)
    flip = "Enable" if a.disabled else "Disable"
    if c1.button(f"{flip} {a.name}", width="stretch",
                 help="Disabling signs them out everywhere at once."):  # fmt: skip
        attempt(lambda: accounts.change(engine, a.name, by=me, disabled=not a.disabled)
                or f"{a.name} is {'enabled' if a.disabled else 'disabled'}.")  # fmt: skip
    if c2.button("Reset password", width="stretch",
                 help="Clears the password, signs them out, and makes a new one-time link."):  # fmt: skip
        attempt(lambda: keep_link(a.name, accounts.reset_password(engine, a.name, by=me))
                or f"Password of {a.name} reset.")  # fmt: skip


def quota_editor() -> None:
    st.caption(" · ".join(f"**{name}**: {what}" for name, what in QUOTAS.items()) + ".")
    before = pd.DataFrame(quotas.table(engine)).T.loc[list(ROLES), list(QUOTAS)]
    gen = st.session_state.setdefault("quota_gen", 0)  # a new editor after a save
    after = st.data_editor(
        before,
        key=f"quotas_{gen}",
        width="content",
        column_config={
            name: st.column_config.NumberColumn(name, help=what, min_value=0, step=1,
                                                max_value=quotas.MAX_QUOTA, required=True)
            for name, what in QUOTAS.items()
        },
    )  # fmt: skip
    changed = [(r, q, int(after.at[r, q])) for r in ROLES for q in QUOTAS
               if int(after.at[r, q]) != int(before.at[r, q])]  # fmt: skip
    if st.button("Save quotas", type="primary"):  # an edit commits when its cell is left
        if changed:
            attempt(lambda: save_quotas(changed))
        else:
            st.info("Nothing changed: double-click a number to edit it, then Save.")


def save_quotas(changed: list[tuple[str, str, int]]) -> str:
    """Set each changed quota; a fresh editor shows the stored values afterwards."""
    for role, name, value in changed:
        quotas.set_(engine, role, name, value, by=current_user())
    st.session_state["quota_gen"] += 1
    return "Quotas saved: " + ", ".join(f"{r} {q} {v}" for r, q, v in changed) + "."


if done := st.session_state.pop("admin_done", None):
    st.success(md_text(done))
people = accounts.all_(engine)

st.subheader("People")
show_link()
when = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC")
st.dataframe(people_frame(people), hide_index=True, width="stretch",
             column_config={"last sign-in (UTC)": when, "created (UTC)": when})  # fmt: skip
left, right = st.columns(2, gap="large")
with left:
    st.markdown("**Add a person**")
    add_form()
with right:
    st.markdown("**Change a person**")
    change_panel(people)

st.subheader("Quotas")
quota_editor()
