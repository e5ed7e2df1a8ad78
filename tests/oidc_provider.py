"""A small, real OpenID Connect provider for the sign-in tests.

Streamlit's `st.login` speaks OpenID Connect to whatever provider `.streamlit/secrets.toml` names.
The tests need one they can start themselves, offline, so this is one: Authlib's Flask
integration with the authorization code flow (PKCE S256, which Streamlit uses when offered),
RS256 id_tokens signed with a key made at start, one registered client, and a sign-in form that
takes any e-mail address. There are no passwords: whoever types an address is that person, which
is all a test of the app's side of sign-in needs. Everything lives in memory.

    python tests/oidc_provider.py --port P --client-id ID --client-secret S --redirect-uri URI

Plain http on 127.0.0.1 needs no AUTHLIB_INSECURE_TRANSPORT, so this does not set it: Authlib 1.9
counts http to a loopback address as secure (RFC 8252 section 7.3), and Streamlit's side (an
Authlib client) does not check the transport at all.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, redirect, request
from joserfc.jwk import RSAKey

FORM = """<!doctype html><title>Local sign-in</title>
<h1>Local sign-in</h1>
<form method="post">
  <label>E-mail <input name="email" type="email" required autofocus></label>
  <button type="submit">Sign in</button>
</form>
"""


@dataclass
class User:
    """Someone who signed in; `sub` is derived from the address, so it is stable across runs."""

    email: str

    @property
    def sub(self) -> str:
        return hashlib.sha256(self.email.lower().encode()).hexdigest()[:24]

    def info(self) -> UserInfo:
        name = self.email.split("@")[0]
        return UserInfo(sub=self.sub, email=self.email, email_verified=True, name=name)


@dataclass
class Client:
    """The one relying party (the app), with the methods Authlib's ClientMixin asks for."""

    client_id: str
    client_secret: str
    redirect_uri: str
    client_metadata: dict = field(default_factory=dict)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uri

    def get_allowed_scope(self, scope):
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile"))

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class Code:
    """An issued authorization code and what it was issued for (AuthorizationCodeMixin)."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None


@dataclass
class Token:
    """An issued access token, kept so the userinfo endpoint can look it up."""

    client: Client
    user: User
    scope: str
    access_token: str
    expires_at: int

    def check_client(self, client):
        return client.client_id == self.client.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_at - int(time.time())

    def is_expired(self):
        return time.time() >= self.expires_at

    def is_revoked(self):
        return False

    def get_user(self):
        return self.user

    def get_client(self):
        return self.client


def create_app(issuer: str, client: Client) -> Flask:
    """The provider as a Flask app: discovery, authorize, token, jwks, userinfo and logout."""
    key = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    key.ensure_kid()
    codes: dict[str, Code] = {}
    tokens: dict[str, Token] = {}

    class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
        def save_authorization_code(self, code, req):
            p = req.payload
            codes[code] = Code(
                code, client.client_id, p.redirect_uri, p.scope, req.user, p.data.get("nonce"),
                p.data.get("code_challenge"), p.data.get("code_challenge_method"),
            )  # fmt: skip

        def query_authorization_code(self, code, client_):
            found = codes.get(code)
            return found if found and found.client_id == client_.client_id else None

        def delete_authorization_code(self, authorization_code):
            codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.user

    class IdToken(OpenIDCode):
        def exists_nonce(self, nonce, req):
            return any(c.nonce == nonce for c in codes.values())

        def resolve_client_private_key(self, client_):
            return key

        def get_encode_header(self, client_):
            return {"alg": "RS256", "kid": key.kid}  # names the jwks key that verifies it

        def get_client_claims(self, client_):
            return {"iss": issuer, "aud": [client_.client_id]}

        def generate_user_info(self, user, scope):
            return user.info().filter(scope)

    class UserInfoFromToken(UserInfoEndpoint):
        def get_issuer(self):
            return issuer

        def generate_user_info(self, user, scope):
            return user.info().filter(scope)

    class Validator(BearerTokenValidator):
        def authenticate_token(self, token_string):
            return tokens.get(token_string)

    def save_token(token, req):
        tokens[token["access_token"]] = Token(
            client, req.user, token["scope"], token["access_token"],
            int(time.time()) + token["expires_in"],
        )  # fmt: skip

    app = Flask(__name__)
    server = AuthorizationServer(
        app, query_client=lambda cid: client if cid == client.client_id else None,
        save_token=save_token,
    )  # fmt: skip
    server.register_grant(AuthorizationCodeGrant, [IdToken(require_nonce=True), CodeChallenge()])
    protector = ResourceProtector()
    protector.register_token_validator(Validator())
    server.register_endpoint(UserInfoFromToken(resource_protector=protector))

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify(
            issuer=issuer,
            authorization_endpoint=f"{issuer}/authorize",
            token_endpoint=f"{issuer}/token",
            userinfo_endpoint=f"{issuer}/userinfo",
            jwks_uri=f"{issuer}/jwks",
            end_session_endpoint=f"{issuer}/logout",
            response_types_supported=["code"],
            grant_types_supported=["authorization_code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            scopes_supported=["openid", "email", "profile"],
            claims_supported=["sub", "email", "email_verified", "name"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            code_challenge_methods_supported=["S256"],
        )

    @app.get("/jwks")
    def jwks():
        return jsonify(keys=[key.as_dict(private=False)])

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        """GET shows the form; POST signs in whoever was typed and sends them back with a code."""
        email = request.form.get("email", "").strip()
        user = User(email) if email else None
        try:  # refuse a bad request (unknown client, wrong redirect URI) before asking anyone
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return server.handle_error_response(request, error)
        if request.method == "GET":
            return FORM
        return server.create_authorization_response(grant=grant, grant_user=user)

    @app.post("/token")
    def token():
        return server.create_token_response()

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo():
        return server.create_endpoint_response("userinfo")

    @app.get("/logout")
    def logout():
        """RP-initiated logout: nothing to forget here (no provider session), so only send the
        person back, and only to the client's own redirect URI."""
        back = request.args.get("post_logout_redirect_uri")
        if back != client.redirect_uri:
            return f"Signed out. ({escape(str(back))} is not a registered address.)", 400
        return redirect(back)

    return app


def start(port: int, client_id: str, client_secret: str, redirect_uri: str, **popen):
    """Run the provider in a subprocess on 127.0.0.1:`port` and return the Popen; `popen` goes to
    subprocess.Popen (stdout, start_new_session, ...). Waiting for it is `tests/oidc.py`'s job."""
    args = [  # --name=value: a random secret may start with "-"
        f"--port={port}", f"--client-id={client_id}",
        f"--client-secret={client_secret}", f"--redirect-uri={redirect_uri}",
    ]  # fmt: skip
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], **popen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", required=True)
    args = parser.parse_args()
    issuer = f"http://127.0.0.1:{args.port}"
    client = Client(args.client_id, args.client_secret, args.redirect_uri)
    create_app(issuer, client).run("127.0.0.1", args.port, threaded=True)


if __name__ == "__main__":
    main()
