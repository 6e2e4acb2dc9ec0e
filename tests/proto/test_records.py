"""The core's frozen records copy and pickle alike in both builds (the
compiled classes refuse the dataclass default, which sets fields with
object.__setattr__; see smtp_proto._events.FrozenRecord)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

import smtp_proto
from smtp_proto import (
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Hello,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    ProxyHeader,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConfig,
    StartTLS,
    TLSInfo,
    XClient,
    XForward,
)

RECORDS: list[Any] = [
    AuthAttempt("PLAIN", "user", "secret"),
    ConnectionClosed("eof"),
    DataChunk(b"Subject: x\r\n\r\nbody\r\n"),
    Hello("EHLO", "client.example.org"),
    MailFrom("a@example.org", {"SIZE": "10"}, size=10, body="8BITMIME"),
    MessageAborted("rset", 12),
    MessageComplete("EDATA", 120),
    MessageStart("DATA"),
    ProxyHeader(2, "PROXY", "TCP4", "192.0.2.1", 1234, "192.0.2.2", 25, ((1, b"h2"),)),
    Quit(),
    RcptTo("b@example.net", {"NOTIFY": "NEVER"}),
    Reply(250, "OK", "2.0.0"),
    Reset(),
    ServerConfig(name="mx.example.com", size=1000),
    StartTLS(),
    TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", bits=128, peer_certificate_der=b"\x30"),
    XClient({"ADDR": "192.0.2.9"}),
    XForward({"NAME": "relay.example.org"}),
]


def test_every_public_record_is_covered() -> None:
    public = {name for name in smtp_proto.__all__
              if dataclasses.is_dataclass(getattr(smtp_proto, name))}
    assert {type(r).__name__ for r in RECORDS} == public - {"Envelope", "Session"}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_a_record_survives_copy_and_pickle(record: Any, how: str) -> None:
    made = {"copy": copy.copy, "deepcopy": copy.deepcopy,
            "pickle": lambda r: pickle.loads(pickle.dumps(r))}[how](record)
    assert made == record
    assert type(made) is type(record)
    assert made is not record or how == "copy"
