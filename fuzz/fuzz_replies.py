"""What the connection sends, and the replay that must send it again.

:class:`InvariantError` is what every broken invariant raises. :func:`_replies`
checks the framing of each ``data_to_send()`` result. :class:`Answer` records
one call answering a decision (or shutting down), so that :func:`split_replay`
can repeat the run through a fresh connection with the same bytes cut
differently and compare events, replies and the final state (split
invariance).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from fuzz_input import Setup

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    Event,
    RemoteProtocolError,
    ServerConnection,
    State,
)

__all__ = ["Answer", "InvariantError", "split_replay"]


class InvariantError(AssertionError):
    """An invariant of smtp_proto does not hold: a bug in the core."""


@dataclass(frozen=True)
class Answer:
    """One call answering a decision, kept so the replay can repeat it."""

    method: str
    args: tuple[object, ...] = ()
    kwargs: tuple[tuple[str, object], ...] = ()

    def apply(self, conn: ServerConnection) -> None:
        getattr(conn, self.method)(*self.args, **dict(self.kwargs))


_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[^\r\n]*")


def _replies(data: bytes) -> list[tuple[int, list[bytes]]]:
    """Check reply framing and split ``data`` into (code, lines) replies."""
    if not data:
        return []
    if not data.endswith(b"\r\n"):
        raise InvariantError(f"output does not end with CRLF: {data[-80:]!r}")
    replies: list[tuple[int, list[bytes]]] = []
    open_code: bytes | None = None
    lines: list[bytes] = []
    for line in data[:-2].split(b"\r\n"):
        m = _LINE.fullmatch(line)
        if m is None:
            raise InvariantError(f"malformed reply line {line[:120]!r}")
        code, sep = m.group(1), m.group(2)
        if open_code is not None and code != open_code:
            raise InvariantError(f"multi-line reply changes code: {data[-300:]!r}")
        lines.append(line)
        if sep == b"-":
            open_code = code
        else:
            replies.append((int(code), lines))
            open_code, lines = None, []
    if open_code is not None:
        raise InvariantError(f"output ends inside a multi-line reply: {data[-300:]!r}")
    for code, _ in replies:
        if 300 <= code < 400 and code not in (334, 354):
            raise InvariantError(f"unexpected intermediate reply {code}")
    return replies


def _coalesce(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def split_replay(setup: Setup, *, recorded: list[Answer], chunks: list[bytes], eof: bool,
                 original_events: list[Event], output: list[bytes],
                 original_error: str | None, original_state: State) -> None:
    """Same bytes, another split, same answers: same events and replies.

    The original run fed ``chunks`` (then EOF if ``eof``), answered with
    ``recorded``, and saw ``original_events``, ``output``, ``original_error``
    and ``original_state``; ``setup.replay`` picks the new split.
    """
    conn = setup.connection(fresh=True)
    answers: Iterator[Answer] = iter(recorded)
    events: list[Event] = []
    out = bytearray()
    error: str | None = None
    fed = False

    def answer() -> None:
        nxt = next(answers, None)
        if nxt is None:
            raise InvariantError("replay met more decisions than the original run")
        nxt.apply(conn)

    def pump() -> bool:
        nonlocal error
        while True:
            try:
                ev = conn.next_event()
            except RemoteProtocolError as exc:
                error = str(exc)
                out.extend(conn.data_to_send())
                return False
            out.extend(conn.data_to_send())
            if ev is NEED_DATA:
                return True
            if ev is PAUSED:
                if conn.pending is not None:
                    answer()
                elif conn.state is State.GREETING and (
                        fed or setup.greeting == "immediate"):
                    conn.send_greeting()
                else:
                    return True
                continue
            assert isinstance(ev, Event)
            events.append(ev)
            if isinstance(ev, ConnectionClosed):
                return False
            if conn.pending is not None:
                answer()

    data = b"".join(chunks)
    mode = setup.replay
    size = len(data) if mode == "whole" else 7 if mode == "split7" or len(data) > 4000 else 1
    going = pump()
    for i in range(0, len(data), max(size, 1)):
        if not going:
            break
        conn.receive_data(data[i : i + size])
        fed = True
        going = pump()
    if going and eof:
        conn.receive_data(b"")
        pump()
    mine = _coalesce(original_events)
    theirs = _coalesce(events)
    if mine != theirs:
        diff = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                    min(len(mine), len(theirs)))
        raise InvariantError(
            f"split-dependent events at #{diff}: {mine[diff : diff + 2]!r} vs "
            f"{theirs[diff : diff + 2]!r} (replay {mode})"
        )
    original = b"".join(output)
    if bytes(out) != original:
        raise InvariantError(
            f"split-dependent replies (replay {mode}):\n{original!r}\nvs\n{bytes(out)!r}"
        )
    if error != original_error or conn.state is not original_state:
        raise InvariantError(f"split-dependent end: {original_error!r}/{original_state} vs "
                             f"{error!r}/{conn.state}")
