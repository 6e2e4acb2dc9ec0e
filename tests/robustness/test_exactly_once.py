"""Exactly once, under fire: 200 concurrent clients send 20 messages each
while some of them vanish at random points and the server gets SIGTERM half
way through. Afterwards every message that was answered 250 is in the store
exactly once, byte for byte, and no other message is."""

from __future__ import annotations

import concurrent.futures
import random
import smtplib
import socket
import struct
import threading
from pathlib import Path

import pytest

from .support import BACKENDS, ServerProcess

CLIENTS = 200
MESSAGES = 20
VANISHING = 0.1   # share of clients that drop the connection once, mid-message
STOP_AFTER = CLIENTS * MESSAGES // 2  # 250s seen before SIGTERM


def _body(client: int, number: int, rng: random.Random) -> bytes:
    filler = "".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(10, 2000)))
    return (f"Message-Id: <{client}.{number}@test>\r\nSubject: {client}/{number}\r\n\r\n"
            f"{filler}\r\n").encode()


class Ledger:
    """What the clients were told: bodies answered 250, by message id."""

    def __init__(self) -> None:
        self.acknowledged: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.half_way = threading.Event()

    def ack(self, key: str, body: bytes) -> None:
        with self.lock:
            assert key not in self.acknowledged
            self.acknowledged[key] = body
            if len(self.acknowledged) >= STOP_AFTER:
                self.half_way.set()


def _vanish_mid_message(client: smtplib.SMTP, body: bytes, rng: random.Random) -> None:
    """MAIL, RCPT, DATA, part of the body, then the socket is gone."""
    client.mail("sender@example.org")
    client.rcpt("rcpt@example.com")
    code, text = client.docmd("DATA")
    if code != 354:  # 421: the server is shutting down
        raise smtplib.SMTPResponseException(code, text)
    assert client.sock is not None
    client.sock.sendall(body[: rng.randrange(1, len(body))])
    client.close()  # the socket and smtplib's file on it: the connection ends


def _client(port: int, index: int, ledger: Ledger) -> None:
    rng = random.Random(index)
    vanish_at = rng.randrange(MESSAGES) if rng.random() < VANISHING else None
    number = 0
    while number < MESSAGES:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                while number < MESSAGES:
                    body = _body(index, number, rng)
                    if number == vanish_at:
                        vanish_at = None
                        _vanish_mid_message(client, body, rng)
                        break  # reconnect; this message was never sent whole
                    client.sendmail("sender@example.org", ["rcpt@example.com"], body)
                    ledger.ack(f"{index}.{number}", body)
                    number += 1
        except (smtplib.SMTPException, OSError):
            return  # the server is shutting down (421, closed): stop sending


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_acknowledged_message_is_stored_once_and_nothing_else(
    backend: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    ledger = Ledger()
    options = {"max_clients": 400, "close_timeout": 20, "socket_timeout": 60}
    with ServerProcess(backend, options=options, handlers="store", store=store) as server:
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(_client, server.port, i, ledger) for i in range(CLIENTS)]
            assert ledger.half_way.wait(120), f"only {len(ledger.acknowledged)} acknowledged"
            server.terminate()
            for future in futures:
                future.result(timeout=120)
        assert server.exit_status() == 0, server.stderr
    stored: dict[str, list[bytes]] = {}
    for path in store.iterdir():
        assert not path.name.startswith("."), f"a half-written file was left: {path.name}"
        data = path.read_bytes()
        key = data.split(b"\r\n", 1)[0].removeprefix(b"Message-Id: <").split(b"@")[0].decode()
        stored.setdefault(key, []).append(data)
    twice = {key for key, copies in stored.items() if len(copies) > 1}
    assert not twice, f"stored more than once: {sorted(twice)[:10]}"
    unacknowledged = set(stored) - set(ledger.acknowledged)
    assert not unacknowledged, f"stored without a 250: {sorted(unacknowledged)[:10]}"
    lost = set(ledger.acknowledged) - set(stored)
    assert not lost, f"answered 250 but not stored: {sorted(lost)[:10]}"
    for key, body in ledger.acknowledged.items():
        assert stored[key][0] == body, f"{key} differs from what was sent"
    assert STOP_AFTER <= len(ledger.acknowledged) < CLIENTS * MESSAGES


def test_a_connection_reset_mid_body_stores_nothing(tmp_path: Path) -> None:
    """The cheap half of the above, on one backend, kept apart so that a
    failure names it: RST in the middle of DATA."""
    store = tmp_path / "store"
    store.mkdir()
    with ServerProcess(BACKENDS[0], handlers="store", store=store) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        file = sock.makefile("rb")
        file.readline()
        for line in (b"EHLO c", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.com>",
                     b"DATA"):
            sock.sendall(line + b"\r\n")
            reply = file.readline()
            while reply[3:4] == b"-":
                reply = file.readline()
        assert reply.startswith(b"354")
        sock.sendall(b"Subject: cut\r\n\r\nhalf a message")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        file.close()
        sock.close()  # linger 0: a reset
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: whole\r\n\r\nok\r\n")
        server.terminate()
        assert server.exit_status() == 0
    bodies = [p.read_bytes() for p in store.iterdir()]
    assert bodies == [b"Subject: whole\r\n\r\nok\r\n"]
