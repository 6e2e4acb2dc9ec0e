"""RCPTs beyond ``max_recipients`` end up counting as client errors.

Each gets ``452 4.5.3`` (RFC 5321 section 4.5.3.1.10). The first 100 of a
transaction are free -- an honest client may send a batch that large -- and
each further one counts towards ``max_invalid_commands``, as Postfix's
``smtpd_recipient_overshoot_limit`` does: the one over the limit gets the
usual ``421 4.7.0`` and the connection ends. Every conversation is checked
in one read, byte by byte and cut at a spread of positions.
"""

from __future__ import annotations

from typing import Any

import pytest

from smtp_proto import DataChunk, MessageComplete, RcptTo, ServerConfig, State
from tests.proto.driver import Result, converse, greeted, open_config
from tests.proto.support import cmd, split_bytes

OVERSHOOT = 100  # documented in docs/core/replies.rst
TOO_MANY = "452 4.5.3 Error: too many recipients"
CLOSED = "421 4.7.0 localhost Error: too many invalid commands"
HELLO = cmd("EHLO client.example")


def rcpts(start: int, count: int) -> bytes:
    return cmd(*[f"RCPT TO:<r{n}@example.com>" for n in range(start, start + count)])


def run(config: ServerConfig, chunks: list[bytes]) -> tuple[Result, State]:
    conn = greeted(config)
    result = converse(conn, chunks)
    return result, conn.state


def in_every_split(config: ServerConfig, data: bytes) -> tuple[Result, State]:
    """The outcome of ``data`` in one read, checked equal byte by byte and
    for cuts at every 97th position."""
    def summary(result: Result, state: State) -> tuple[object, ...]:
        # How a body is cut into DataChunks depends on the reads: compare the bytes.
        events = [e for e in result.events if not isinstance(e, DataChunk)]
        return result.output, events, result.body, repr(result.error), state

    expected, state = run(config, [data])
    for chunks in [split_bytes(data),
                   *([data[:cut], data[cut:]] for cut in range(1, len(data), 97))]:
        assert summary(*run(config, chunks)) == summary(expected, state)
    return expected, state


def finals(result: Result) -> list[str]:
    """The last line of every reply (the EHLO reply is several lines)."""
    return [line for line in result.replies if line[3:4] == " "]


def test_overshoot_then_errors_then_421() -> None:
    config = open_config(max_recipients=2)  # max_invalid_commands: 10
    data = HELLO + cmd("MAIL FROM:<a@example.com>") + rcpts(0, 2 + OVERSHOOT + 10 + 1) \
        + cmd("NOOP")
    result, state = in_every_split(config, data)
    # EHLO, MAIL and the two recipients max_recipients allows.
    assert [line[:3] for line in finals(result)[:4]] == ["250"] * 4
    # 100 free, 10 counted (still 452), the 11th counted one is the 421.
    assert finals(result)[4:] == [TOO_MANY] * (OVERSHOOT + 10) + [CLOSED]
    assert len(result.of(RcptTo)) == 2
    assert state is State.ERROR
    assert "too many invalid commands" in repr(result.error)


def test_allowance_and_limit_exactly_used_keeps_the_session() -> None:
    config = open_config(max_recipients=2)
    data = HELLO + cmd("MAIL FROM:<a@example.com>") + rcpts(0, 2 + OVERSHOOT + 10) \
        + cmd("DATA", "hi", ".", "NOOP")
    result, state = in_every_split(config, data)
    assert finals(result)[-(OVERSHOOT + 13):] == [TOO_MANY] * (OVERSHOOT + 10) + [
        "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 OK: message queued", "250 2.0.0 OK"]
    assert len(result.of(MessageComplete)) == 1
    assert state is State.COMMAND


def test_allowance_is_per_transaction_the_error_count_is_not() -> None:
    config = open_config(max_recipients=1)
    first = cmd("MAIL FROM:<a@example.com>") + rcpts(0, 1 + OVERSHOOT + 5)  # 5 counted
    second = cmd("RSET", "MAIL FROM:<a@example.com>") + rcpts(0, 1 + OVERSHOOT + 5)  # 10
    result, state = in_every_split(config, HELLO + first + second + rcpts(500, 2))
    tail = finals(result)[-(OVERSHOOT + 5 + 1):]
    # RSET and the new MAIL renew the allowance, not the error count: the
    # second transaction's 106th refused RCPT is the 11th error.
    assert tail == [TOO_MANY] * (OVERSHOOT + 5) + [CLOSED]
    assert state is State.ERROR


def test_excess_rcpts_share_the_budget_with_other_errors() -> None:
    config = open_config(max_recipients=1)
    data = HELLO + cmd("FOO", "FOO", "FOO", "FOO", "MAIL FROM:<a@example.com>") \
        + rcpts(0, 1 + OVERSHOOT + 7)
    result, _ = in_every_split(config, data)
    assert finals(result)[-(OVERSHOOT + 7):] == [TOO_MANY] * (OVERSHOOT + 6) + [CLOSED]


def test_a_delivered_message_resets_the_error_count() -> None:
    config = open_config(max_recipients=1)
    transaction = cmd("MAIL FROM:<a@example.com>") + rcpts(0, 1 + OVERSHOOT + 10) \
        + cmd("DATA", "hi", ".")
    result, state = in_every_split(config, HELLO + transaction + transaction)
    assert CLOSED not in result.replies
    assert len(result.of(MessageComplete)) == 2
    assert state is State.COMMAND


@pytest.mark.parametrize("options", [{"max_invalid_commands": None}, {"max_recipients": None}])
def test_nothing_counts_without_the_limits(options: dict[str, Any]) -> None:
    config = open_config(**{"max_recipients": 2, **options})
    result, state = run(config, [HELLO + cmd("MAIL FROM:<a@example.com>") + rcpts(0, 1200)])
    assert CLOSED not in result.replies
    assert state is State.COMMAND
    assert result.error is None
