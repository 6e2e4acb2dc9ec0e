"""Shared helpers for the table-driven core tests (on top of ``driver``).

Kept apart from ``driver.py`` so that the driver's behaviour stays exactly
what other test modules rely on.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Event,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    TLSInfo,
)
from tests.proto.driver import Decide, Result, accept_all, converse, greeted, open_config

__all__ = [
    "ENHANCED",
    "TLS",
    "b64",
    "by_type",
    "cmd",
    "enhanced_of",
    "final_lines",
    "ready",
    "reject_with",
    "split_bytes",
    "step_all",
    "talk",
]

TLS = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", bits=128,
              servername="mx.example")
"""A finished handshake, for implicit TLS and ``tls_established()``."""

ENHANCED = re.compile(r"\A(\d)\d\d[ -]([245])\.(\d{1,3})\.(\d{1,3}) ")
"""A reply line that carries an RFC 3463 enhanced status code."""


def cmd(*lines: str | bytes) -> bytes:
    """Command lines, each terminated by CRLF."""
    return b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\r\n" for x in lines)


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def enhanced_of(line: str) -> str | None:
    """The enhanced status code of one reply line, if it has one."""
    m = ENHANCED.match(line)
    return f"{m.group(2)}.{m.group(3)}.{m.group(4)}" if m else None


def final_lines(result: Result) -> list[str]:
    """The last line of every reply (the one that carries ``code SP``)."""
    return [line for line in result.replies if line[3:4] != "-"]


def split_bytes(data: bytes) -> list[bytes]:
    """``data`` one byte at a time (the worst possible network split)."""
    return [data[i : i + 1] for i in range(len(data))]


def by_type(rules: Mapping[type[Event], Callable[[ServerConnection, Event], None]]) -> Decide:
    """Answer decisions of the listed types with their rule, accept the rest."""

    def decide(conn: ServerConnection, event: Event) -> None:
        for kind, rule in rules.items():
            if isinstance(event, kind):
                rule(conn, event)
                return
        conn.accept()

    return decide


def reject_with(
    kind: type[Event], code: int, text: str | None = None, enhanced: str | None = None
) -> Decide:
    """Reject every decision of type ``kind`` with ``code``; accept the others."""
    return by_type({kind: lambda conn, _event: conn.reject(code, text, enhanced)})


def ready(
    config: ServerConfig | None = None,
    hello: bytes | None = b"EHLO client.example\r\n",
    **kwargs: object,
) -> ServerConnection:
    """A greeted connection (open config by default) that has sent ``hello``."""
    conn = greeted(config if config is not None else open_config(), **kwargs)
    if hello:
        result = converse(conn, hello)
        assert result.codes and result.codes[-1] == 250, result.replies
    return conn


def talk(
    conn: ServerConnection, chunks: bytes | Iterable[bytes], decide: Decide = accept_all
) -> Result:
    """``converse`` under a shorter name (the tests read better with it)."""
    return converse(conn, chunks, decide)


def step_all(conn: ServerConnection) -> list[Event | object]:
    """Every ``next_event()`` answer up to NEED_DATA, PAUSED or ConnectionClosed,
    deciding nothing.

    A ``RemoteProtocolError`` ends the list as its last item.
    """
    out: list[Event | object] = []
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            out.append(exc)
            return out
        out.append(event)
        if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
            return out
