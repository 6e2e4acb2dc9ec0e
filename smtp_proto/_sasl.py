"""SASL exchanges for AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5, XOAUTH2.

Each mechanism is a tiny state machine fed decoded client lines; a step
yields a challenge to send (334), credentials for the application, or a
failure reply. Cancellation (``*``) is handled by the connection, since it is
the same for every mechanism.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from ._events import AuthAttempt

__all__ = ["Challenge", "Credentials", "Failure", "SaslExchange", "start_exchange"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes
    """Raw challenge; sent base64-encoded after ``334 ``."""


@dataclass(frozen=True, slots=True)
class Credentials:
    attempt: AuthAttempt


@dataclass(frozen=True, slots=True)
class Failure:
    code: int
    enhanced: str
    text: str


Step = Challenge | Credentials | Failure

_BAD_BASE64 = Failure(501, "5.5.2", "Error: cannot decode base64 response")
_BAD_USERDATA = Failure(501, "5.5.2", "Error: invalid userdata")


def _decode(line: str) -> bytes | None:
    # RFC 4954 section 4: "=" is an empty initial response.
    if line == "=":
        return b""
    try:
        return base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class SaslExchange:
    """One running AUTH exchange. ``feed`` takes the next client line."""

    mechanism = ""

    def start(self, initial: str | None) -> Step:
        """Begin, with the initial response of the AUTH command if any."""
        if initial is None:
            return Challenge(b"")
        return self.feed(initial)

    def feed(self, line: str) -> Step:
        raw = _decode(line)
        if raw is None:
            return _BAD_BASE64
        return self.step(raw)

    def step(self, raw: bytes) -> Step:  # pragma: no cover - abstract
        raise NotImplementedError


class _Plain(SaslExchange):
    """RFC 4616: ``authzid NUL authcid NUL passwd``."""

    mechanism = "PLAIN"

    def step(self, raw: bytes) -> Step:
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return _BAD_USERDATA
        fields = [_text(p) for p in parts]
        authzid, authcid, password = fields
        if authzid is None or authcid is None or password is None:
            return _BAD_USERDATA
        # Many clients put the user in authzid and leave authcid empty.
        username = authcid or authzid
        if not username or _CONTROL.search(username) or _CONTROL.search(authzid):
            return _BAD_USERDATA
        return Credentials(
            AuthAttempt("PLAIN", username, password=password, authzid=authzid or None)
        )


class _Login(SaslExchange):
    """The non-standard but ubiquitous LOGIN: username, then password."""

    mechanism = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial: str | None) -> Step:
        if initial is None:
            return Challenge(b"Username:")
        return self.feed(initial)

    def step(self, raw: bytes) -> Step:
        text = _text(raw)
        if text is None:
            return _BAD_USERDATA
        if self._username is None:
            if not text or _CONTROL.search(text):
                return _BAD_USERDATA
            self._username = text
            return Challenge(b"Password:")
        return Credentials(AuthAttempt("LOGIN", self._username, password=text))


class _CramMD5(SaslExchange):
    """RFC 2195: the server challenge, answered by ``user hex(hmac_md5)``."""

    mechanism = "CRAM-MD5"

    def __init__(self, challenge: str) -> None:
        self._challenge = challenge

    def start(self, initial: str | None) -> Step:
        if initial is not None:
            return Failure(501, "5.5.4", "Error: CRAM-MD5 takes no initial response")
        return Challenge(self._challenge.encode("utf-8"))

    def step(self, raw: bytes) -> Step:
        text = _text(raw)
        if text is None:
            return _BAD_USERDATA
        username, _, digest = text.rpartition(" ")
        if not username or not digest or _CONTROL.search(username):
            return _BAD_USERDATA
        return Credentials(
            AuthAttempt("CRAM-MD5", username, challenge=self._challenge, response=digest)
        )


class _XOAuth2(SaslExchange):
    """Google's XOAUTH2: ``user=U^Aauth=Bearer T^A^A``."""

    mechanism = "XOAUTH2"

    def step(self, raw: bytes) -> Step:
        text = _text(raw)
        if text is None:
            return _BAD_USERDATA
        username = token = None
        for part in text.split("\x01"):
            key, _, value = part.partition("=")
            key = key.lower()
            if key == "user":
                username = value.strip()
            elif key == "auth":
                scheme, _, rest = value.strip().partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
        if not username or not token or _CONTROL.search(username):
            return _BAD_USERDATA
        return Credentials(AuthAttempt("XOAUTH2", username, access_token=token))


def start_exchange(
    mechanism: str, cram_md5_challenge: Callable[[], str] | None
) -> SaslExchange | None:
    """A fresh exchange for ``mechanism`` (upper-case), or ``None`` if unknown."""
    if mechanism == "PLAIN":
        return _Plain()
    if mechanism == "LOGIN":
        return _Login()
    if mechanism == "XOAUTH2":
        return _XOAuth2()
    if mechanism == "CRAM-MD5" and cram_md5_challenge is not None:
        return _CramMD5(cram_md5_challenge())
    return None
