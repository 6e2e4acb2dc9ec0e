"""``forbid_unauth_pipelining``: an unauthenticated client that sends more
behind DATA without waiting for the 354 is told ``554 5.5.0`` and closed
(Postfix's ``smtpd_forbid_unauth_pipelining``)."""

from __future__ import annotations

import pytest

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    MessageComplete,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
)

TRANSACTION = (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
               b"Subject: x\r\n\r\nbody\r\n.\r\n")


def _run(conn: ServerConnection, data: bytes) -> tuple[bytes, list[object], bool]:
    """Feed ``data``, accept every decision; (replies, events, failed)."""
    conn.receive_data(data)
    events: list[object] = []
    try:
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                conn.accept()
                continue
            events.append(event)
    except RemoteProtocolError:
        return conn.data_to_send(), events, True
    return conn.data_to_send(), events, False


def _connection(**options: object) -> ServerConnection:
    config = ServerConfig(name="mx.example", auth_optional=True,  # type: ignore[arg-type]
                          **options)
    conn = ServerConnection(config)
    conn.send_greeting()
    _run(conn, b"EHLO client.example\r\n")
    return conn


def test_a_body_sent_behind_data_is_a_protocol_violation() -> None:
    conn = _connection(forbid_unauth_pipelining=True)
    out, events, failed = _run(conn, TRANSACTION + TRANSACTION)
    assert failed and conn.closed
    assert out.endswith(b"554 5.5.0 Error: SMTP protocol synchronization\r\n")
    assert b"354" not in out
    assert not any(isinstance(e, MessageComplete) for e in events)


def test_a_client_that_waits_for_354_is_served() -> None:
    conn = _connection(forbid_unauth_pipelining=True)
    out, _, failed = _run(conn, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
                          b"DATA\r\n")
    assert not failed and out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    out, events, failed = _run(conn, b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert not failed and any(isinstance(e, MessageComplete) for e in events)


@pytest.mark.parametrize("options", [{}, {"forbid_unauth_pipelining": False}])
def test_off_by_default(options: dict[str, object]) -> None:
    conn = _connection(**options)
    _, events, failed = _run(conn, TRANSACTION + TRANSACTION)
    assert not failed
    assert sum(isinstance(e, MessageComplete) for e in events) == 2


def test_an_authenticated_client_may_pipeline() -> None:
    conn = _connection(forbid_unauth_pipelining=True, allow_insecure_auth=True)
    _run(conn, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")  # accepted by _run
    assert conn.session.user == "alice"
    _, events, failed = _run(conn, TRANSACTION + TRANSACTION)
    assert not failed
    assert sum(isinstance(e, MessageComplete) for e in events) == 2
