"""XOAUTH2: clients log in with an OAuth 2.0 access token."""

from __future__ import annotations

from smtp_anyio import AuthAttempt, Session, SMTPError, SMTPServer

# Stands in for your identity provider: token -> the account it was issued to.
# A real server asks the provider (token introspection, RFC 7662) over HTTP.
TOKENS = {"ya29.a0-valid-token": "alice@example.org"}


async def verify_token(token: str | None) -> str | None:
    return TOKENS.get(token or "")


async def on_auth(auth: AuthAttempt, session: Session) -> str:
    owner = await verify_token(auth.access_token)
    if owner is None or owner != auth.username:
        # Sent base64-encoded as "334 <challenge>"; the client answers with an
        # empty line and then gets the 535.
        raise SMTPError(535, "Error: invalid or expired token", enhanced="5.7.8", challenge={
            "status": "401", "schemes": "bearer", "scope": "https://mail.example.org/",
        })
    return owner


def build_server(cert_file: str, key_file: str) -> SMTPServer:
    return SMTPServer(auth_methods=["XOAUTH2"], on_auth=on_auth, key=key_file, cert=cert_file)
