"""A client that keeps sending RCPTs past ``max_recipients`` is disconnected,
on every backend, over a real socket.

Before, each got ``452 4.5.3`` for ever. Now the first 100 of a transaction
are free (an honest client's batch) and each further one counts towards
``max_invalid_commands`` (10 by default), as Postfix's
``smtpd_recipient_overshoot_limit`` does: the 111th excess RCPT gets the
usual ``421 4.7.0`` and the connection closes. The client sends one command
per round trip, so that the server has read everything when it closes.
"""

from __future__ import annotations

from typing import Any

from tests.server.raw_smtp import RawClient

NAME = "mx.test"
TOO_MANY = "452 4.5.3 Error: too many recipients"


def test_a_thousand_excess_recipients_end_in_421(start_server: Any) -> None:
    running = start_server(name=NAME, auth_optional=True, max_recipients=2)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        replies = []
        for n in range(2 + 1000):
            replies.append(client.one(f"RCPT TO:<r{n}@example.com>"))
            if replies[-1].startswith("421 "):
                break
        assert client.expect_closed() == b""
    assert replies[:2] == ["250 2.1.5 Accepted"] * 2
    assert replies[2:] == [TOO_MANY] * 110 + [
        f"421 4.7.0 {NAME} Error: too many invalid commands"]


def test_an_honest_overshoot_still_delivers(start_server: Any, inbox: Any) -> None:
    # RFC 5321 4.5.3.1.10: the refused recipients go in another transaction.
    running = start_server(name=NAME, auth_optional=True, max_recipients=2,
                           on_data=inbox.on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        for batch in (range(0, 110), range(110, 220)):
            client.envelope("a@example.com", *[f"r{n}@example.com" for n in batch[:2]])
            # Pipelined (RFC 2920): 108 refused, 100 free and 8 errors. The
            # delivered message resets the error count, or the second
            # batch's 3rd error would be the 11th and get the 421.
            client.send("".join(f"RCPT TO:<r{n}@example.com>\r\n" for n in batch[2:]))
            assert client.replies(108) == [TOO_MANY] * 108
            assert client.data(b"Subject: hi\r\n\r\nhello\r\n") == "250 2.0.0 OK: message queued"
    first, second = inbox.wait_for(2)
    assert first.recipients == ["r0@example.com", "r1@example.com"]
    assert second.recipients == ["r110@example.com", "r111@example.com"]
