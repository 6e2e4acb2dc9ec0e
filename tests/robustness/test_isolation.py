"""One connection's failure is that connection's alone: an exception that
escapes the protocol handling of one client (a bug, injected here into the
core's ``receive_data``) closes that client's connection, is logged, and
leaves the server and a concurrent session's message alone."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

import smtp_proto
from tests.server.raw_smtp import RawClient

_original = smtp_proto.ServerConnection.receive_data


def _faulty(self: smtp_proto.ServerConnection, data: bytes) -> None:
    if b"BOOM" in data:
        raise RuntimeError("injected fault")
    _original(self, data)


def test_a_fault_in_one_connection_spares_the_others(
    start_server: Any, inbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    monkeypatch.setattr(smtp_proto.ServerConnection, "receive_data", _faulty)
    with smtplib.SMTP(*running.address, timeout=10) as bystander:
        bystander.ehlo("bystander.example")
        bystander.mail("a@example.org")
        with RawClient(running.address, timeout=10) as victim:
            victim.send(b"BOOM\r\n")
            assert victim.expect_closed() == b""  # closed, nothing more said
        bystander.rcpt("b@example.com")
        assert bystander.data(b"Subject: still here\r\n\r\nbody\r\n")[0] == 250
    assert inbox.wait_for(1)[0].body == b"Subject: still here\r\n\r\nbody\r\n"
    with RawClient(running.address, timeout=10) as later:  # and the server accepts on
        assert later.greeting is not None and later.greeting[0].startswith("220 ")
