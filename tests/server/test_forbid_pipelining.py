"""``forbid_unauth_pipelining`` over real sockets: a client that writes
MAIL/RCPT/DATA/body twice in one go, without waiting for any reply."""

from __future__ import annotations

from typing import Any

from .raw_smtp import RawClient

TRANSACTION = (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
               b"Subject: bot\r\n\r\nbody\r\n.\r\n")


def test_a_client_that_does_not_wait_for_354_is_cut_off(start_server: Any, inbox: Any) -> None:
    running = start_server(auth_optional=True, forbid_unauth_pipelining=True,
                           on_data=inbox.on_data)
    with RawClient(running.address, timeout=10) as client:
        client.ehlo()
        client.send(TRANSACTION + TRANSACTION)
        said = client.expect_closed()
    assert said.endswith(b"554 5.5.0 Error: SMTP protocol synchronization\r\n"), said
    assert b"354 " not in said
    with RawClient(running.address, timeout=10) as patient:  # a client that waits is served
        patient.ehlo()
        patient.envelope("a@example.org", "b@example.com")
        assert patient.data(b"Subject: ok\r\n\r\nbody\r\n").startswith("250 ")
    assert [m.body for m in inbox.wait_for(1)] == [b"Subject: ok\r\n\r\nbody\r\n"]


def test_off_both_messages_are_taken(start_server: Any, inbox: Any) -> None:
    running = start_server(auth_optional=True, on_data=inbox.on_data)
    with RawClient(running.address, timeout=10) as client:
        client.ehlo()
        client.send(TRANSACTION + TRANSACTION + b"QUIT\r\n")
        said = client.expect_closed()
    assert said.count(b"354 ") == 2 and b"554" not in said
    assert len(inbox.wait_for(2)) == 2
