"""The local OpenID Connect provider (`tests/oidc_provider.py`) for tests, and the secrets that
point an app at it.

    with provider(tmp_path, app_port) as idp:
        env = {**os.environ, **idp.env}  # then start the app on app_port with this environment
        page.goto(idp.app_url)  # 127.0.0.1, not localhost: see below

Where Streamlit (1.67) reads secrets: the option `secrets.files`, by default
`~/.streamlit/secrets.toml`, then `.streamlit/secrets.toml` under the working directory, then
`.streamlit/secrets.toml` beside the main script (later files win). For the app that last one is
the repository's own `.streamlit/`, which a test must not write into. Setting the option, with
`--secrets.files PATH` or the environment variable `STREAMLIT_SECRETS_FILES=PATH`, replaces the
whole list, so a stray secrets file in any of those places is then ignored. `scripts/start.py`
passes no flags on to Streamlit but its children inherit the environment, hence `env`.

The app must be opened at exactly the host and port of `redirect_uri`: Streamlit keeps the login
state in a cookie of that origin and checks the identity cookie's origin against the page's, so an
app opened at http://localhost:PORT stays signed out.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.oidc_provider import start


@dataclass(frozen=True)
class ProviderInfo:
    url: str  # the issuer, http://127.0.0.1:PORT
    app_url: str  # where the browser must open the app
    client_id: str
    client_secret: str
    secrets_toml: str  # the app's whole secrets.toml: an [auth] section for this provider
    secrets_file: Path  # the same text, written outside the repository
    env: dict[str, str]  # STREAMLIT_SECRETS_FILES=secrets_file, for the app's process
    log: Path  # the provider's output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secrets_toml(issuer: str, app_port: int, client_id: str, client_secret: str) -> str:
    """`[auth]` for Streamlit's default provider (`st.login()` with no name). Streamlit asks for
    the scopes "openid email profile" and uses PKCE S256 because discovery offers it."""
    return f"""[auth]
redirect_uri = "http://127.0.0.1:{app_port}/oauth2callback"
cookie_secret = "{secrets.token_urlsafe(32)}"
client_id = "{client_id}"
client_secret = "{client_secret}"
server_metadata_url = "{issuer}/.well-known/openid-configuration"
"""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def provider(
    directory, app_port: int, client_id: str = "candlelab", timeout: float = 30
) -> Iterator[ProviderInfo]:
    """Start the provider on a free port for an app on `app_port`, wait until its discovery
    document answers, yield its details, and stop it. `directory` is a folder (pytest's
    tmp_path) or a tmp_path_factory, and receives secrets.toml and the provider's log."""
    if hasattr(directory, "mktemp"):
        directory = directory.mktemp("oidc")
    directory = Path(directory)
    port, client_secret = free_port(), secrets.token_urlsafe(24)
    issuer = f"http://127.0.0.1:{port}"
    text = secrets_toml(issuer, app_port, client_id, client_secret)
    secrets_file = directory / "secrets.toml"
    secrets_file.write_text(text)
    log_path = directory / "oidc_provider.log"
    redirect_uri = f"http://127.0.0.1:{app_port}/oauth2callback"
    with open(log_path, "w") as log:
        proc = start(port, client_id, client_secret, redirect_uri, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + timeout
            while not _answers(f"{issuer}/.well-known/openid-configuration"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"OIDC provider did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield ProviderInfo(
                url=issuer,
                app_url=f"http://127.0.0.1:{app_port}",
                client_id=client_id,
                client_secret=client_secret,
                secrets_toml=text,
                secrets_file=secrets_file,
                env={"STREAMLIT_SECRETS_FILES": str(secrets_file)},
                log=log_path,
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
