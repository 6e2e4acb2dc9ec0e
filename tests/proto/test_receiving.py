"""``ServerConnection.receiving``: what a backend's per-command deadline
times. True from a command's first byte to its line end, and for a whole
message body; False between commands and while the backend decides."""

from __future__ import annotations

from smtp_proto import NEED_DATA, PAUSED, MessageStart, ServerConfig, ServerConnection


def _drain(conn: ServerConnection) -> None:
    """Answer every decision; stop when the core needs bytes."""
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return
        if event is PAUSED and conn.pending is not None:
            conn.accept()
        elif isinstance(event, MessageStart):
            continue


def _connection() -> ServerConnection:
    conn = ServerConnection(ServerConfig(name="mx.example", auth_optional=True))
    conn.send_greeting()
    _drain(conn)
    return conn


def test_a_command_line_is_received_from_its_first_byte_to_its_end() -> None:
    conn = _connection()
    assert not conn.receiving
    conn.receive_data(b"EH")
    _drain(conn)
    assert conn.receiving
    conn.receive_data(b"LO client.example\r\n")
    _drain(conn)
    assert not conn.receiving


def test_pipelined_whole_commands_leave_nothing_under_way() -> None:
    conn = _connection()
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
    _drain(conn)
    assert not conn.receiving


def test_a_message_body_is_received_until_its_end() -> None:
    conn = _connection()
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
                      b"DATA\r\n")
    _drain(conn)
    assert conn.receiving  # DATA accepted: the body is under way, even empty
    conn.receive_data(b"Subject: x\r\n\r\nbody\r\n")
    _drain(conn)
    assert conn.receiving
    conn.receive_data(b".\r\n")
    _drain(conn)
    assert not conn.receiving


def test_an_overlong_line_being_skipped_is_still_under_way() -> None:
    conn = _connection()
    conn.receive_data(b"NOOP " + b"x" * 5000)
    _drain(conn)
    assert conn.receiving
    conn.receive_data(b"\r\n")
    _drain(conn)
    assert not conn.receiving
    assert b"500 5.5.2" in conn.data_to_send()


def test_the_transcript_redacts_sasl_and_auth_responses() -> None:
    said: list[tuple[str, str]] = []
    conn = ServerConnection(ServerConfig(name="mx.example", allow_insecure_auth=True,
                                         auth_methods=("PLAIN", "LOGIN")),
                            transcript=lambda direction, text: said.append((direction, text)))
    conn.send_greeting()
    _drain(conn)
    for line in (b"EHLO c\r\n", b"AUTH LOGIN\r\n", b"YWxpY2U=\r\n", b"czNjcmV0\r\n",
                 b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n"):
        conn.receive_data(line)
        _drain(conn)
    commands = [text for direction, text in said if direction == "C"]
    assert commands == ["EHLO c", "AUTH LOGIN", "***", "***", "AUTH PLAIN ***"]
    replies = [text for direction, text in said if direction == "S"]
    assert replies[0] == "220 mx.example ESMTP" and replies[-1].startswith("503 ")
    assert not any("czNjcmV0" in text or "AHMzY3JldA" in text for _, text in said)
