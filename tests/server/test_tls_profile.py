"""The default TLS profile is Mozilla's "intermediate": TLS 1.2+, AEAD
suites only, groups X25519/P-256/P-384. Checked with ``openssl s_client``
against every backend's implicit-TLS listener; ``ciphers`` and
``ecdh_curve`` loosen it."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from .conftest import TLSMaterial

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

LISTENERS = {"plain": {}, "tls": {"secure": True}}


def _handshake(port: int, *args: str) -> tuple[bool, str]:
    """Does ``openssl s_client`` with ``args`` complete a handshake? Also
    returns what it said. (trustme's certificates are ECDSA: the suites
    below are the ECDSA ones.)"""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
    )
    output = result.stdout + result.stderr
    return "CONNECTION ESTABLISHED" in output and result.returncode == 0, output


REFUSED = [
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"),   # CBC (LUCKY13 territory)
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"),
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"),     # CBC with SHA-1
    ("-tls1_1",),
    ("-groups", "secp521r1"),
    ("-groups", "X448"),
    ("-tls1_2", "-groups", "secp521r1"),
]
ACCEPTED = [
    ("-tls1_3",),
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("-groups", "X25519"),
    ("-groups", "P-256"),
    ("-groups", "P-384"),
]


def test_the_default_profile_is_mozilla_intermediate(
    start_server: Any, tls: TLSMaterial
) -> None:
    running = start_server(listeners=LISTENERS, auth_optional=True, **tls.server_options)
    port = running.ports["tls"]
    for args in ACCEPTED:
        ok, output = _handshake(port, *args)
        assert ok, f"{args} refused:\n{output[-600:]}"
    for args in REFUSED:
        ok, output = _handshake(port, *args)
        assert not ok, f"{args} accepted:\n{output[-600:]}"


def test_ciphers_and_ecdh_curve_loosen_it(start_server: Any, tls: TLSMaterial) -> None:
    running = start_server(listeners=LISTENERS, auth_optional=True, ciphers="DEFAULT",
                           ecdh_curve="auto", **tls.server_options)
    port = running.ports["tls"]
    for args in (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"), ("-groups", "secp521r1")):
        ok, output = _handshake(port, *args)
        assert ok, f"{args} refused although loosened:\n{output[-600:]}"


def test_bad_profile_options_are_refused_at_creation(start_server: Any, tls: TLSMaterial) -> None:
    with pytest.raises(ValueError, match="cipher"):
        start_server(ciphers="NO-SUCH-CIPHER", **tls.server_options)
    with pytest.raises(ValueError, match="groups"):
        start_server(ecdh_curve="P-999", **tls.server_options)


def _session_client(port: int, *args: str) -> str:
    # Stay connected until the greeting is in, then QUIT: a whole session,
    # closed by the book (close_notify both ways).
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", *args],
        input="QUIT\n", capture_output=True, text=True, timeout=30, check=False,
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize("how", ["session-id", "ticket"])
def test_tls12_sessions_resume(start_server: Any, tls: TLSMaterial, tmp_path: Any,
                               how: str) -> None:
    """Five reconnections resume the first session, by session ID (the
    server's cache) and by ticket."""
    running = start_server(listeners=LISTENERS, auth_optional=True, **tls.server_options)
    port = running.ports["tls"]
    session = tmp_path / "session.pem"
    extra = ("-no_ticket",) if how == "session-id" else ()
    first = _session_client(port, *extra, "-sess_out", str(session))
    assert "New, TLSv1.2" in first, first[-600:]
    reused = sum("Reused, TLSv1.2" in _session_client(port, *extra, "-sess_in", str(session))
                 for _ in range(5))
    assert reused == 5


@pytest.mark.parametrize(("sent", "seen"), [
    ("mail.example.com", "mail.example.com"),
    ("a\r\nX-Injected: yes", None),     # not a host name: not shown to the application
    ("tab\there.example", None),
])
def test_only_a_host_name_reaches_the_session_as_servername(
    start_server: Any, tls: TLSMaterial, sent: str, seen: str | None
) -> None:
    from .raw_smtp import Recorder

    names = Recorder()
    running = start_server(listeners=LISTENERS, auth_optional=True,
                           on_secure=lambda info, session: names.add(
                               (info.servername, session.servername)),
                           **tls.server_options)
    # Stay for the greeting (-ign_eof: read on after typing QUIT): on_secure
    # runs before it, and a client gone at once might not see it run.
    said = _session_client(running.ports["tls"], "-servername", sent, "-ign_eof")
    assert "221 " in said, said[-600:]
    assert names.wait_for(1) == [(seen, seen)]
