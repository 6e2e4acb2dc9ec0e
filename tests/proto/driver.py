"""A tiny synchronous driver for the core, shared by the core's tests.

``converse(conn, data, decide)`` feeds ``data``, drains events (answering
decisions with ``decide``) and returns the events and the reply bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    Event,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
)

Decide = Callable[[ServerConnection, Event], None]


def accept_all(conn: ServerConnection, event: Event) -> None:
    conn.accept()


@dataclass
class Result:
    events: list[Event] = field(default_factory=list)
    output: bytes = b""
    error: RemoteProtocolError | None = None
    paused: bool = False

    @property
    def replies(self) -> list[str]:
        """Reply lines without CRLF."""
        return self.output.decode("utf-8", "replace").split("\r\n")[:-1]

    @property
    def codes(self) -> list[int]:
        """The code of every complete reply (multi-line replies count once)."""
        return [int(line[:3]) for line in self.replies if line[3:4] != "-"]

    @property
    def body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, DataChunk))

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def drain(
    conn: ServerConnection, decide: Decide = accept_all, result: Result | None = None
) -> Result:
    result = result if result is not None else Result()
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            result.error = exc
            break
        if event is NEED_DATA:
            break
        if event is PAUSED:
            result.paused = True
            break
        assert isinstance(event, Event)
        result.events.append(event)
        if isinstance(event, ConnectionClosed):
            break
        if conn.pending is not None:
            decide(conn, event)
    result.output += conn.data_to_send()
    return result


def converse(
    conn: ServerConnection, chunks: bytes | Iterable[bytes], decide: Decide = accept_all
) -> Result:
    """Feed each chunk in turn (draining after each) and collect everything."""
    if isinstance(chunks, bytes):
        chunks = [chunks]
    result = Result()
    for chunk in chunks:
        conn.receive_data(chunk)
        drain(conn, decide, result)
    return result


def greeted(config: ServerConfig | None = None, **kwargs: object) -> ServerConnection:
    """A connection whose greeting has been sent and discarded."""
    conn = ServerConnection(config, **kwargs)  # type: ignore[arg-type]
    conn.send_greeting()
    conn.data_to_send()
    return conn


def open_config(**options: object) -> ServerConfig:
    """A config where mail needs no AUTH (the common test setup)."""
    options.setdefault("auth_optional", True)
    return ServerConfig(**options)  # type: ignore[arg-type]
