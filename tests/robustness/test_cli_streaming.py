"""``python -m smtp_anyio`` streams each message into ``tmp/`` as it comes:
a big message costs it no memory, a message over the default 25 MiB limit
is refused, and one that never completes leaves no file behind."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.example_programs import TIMEOUT, trace_length, without_trace
from tests.robustness.test_cli_support import Client, CLIProcess, files, queue_id

MiB = 1024 * 1024
LIMIT = 25 * MiB  # the default --size

# The default event loop (uvloop when installed) and trio: the handler's
# trips to worker threads and its cleanup on cancellation differ.
BACKENDS = pytest.mark.parametrize("backend", [[], ["--backend", "trio"]],
                                   ids=["default", "trio"])


def _bdat_small(client: Client) -> str:
    """A whole 4-byte message in one BDAT LAST; its reply."""
    client.envelope()
    client.send(b"BDAT 4 LAST\r\nok\r\n")
    return client.reply()


@BACKENDS
def test_a_200_mb_message_is_streamed_to_disk_not_held_in_memory(
        tmp_path: Path, backend: list[str]) -> None:
    size = 200 * MiB
    growth_limit = 40 * MiB  # before streaming: about 2 x size (400 MiB)
    with CLIProcess(tmp_path / "mail", "--size", "0", *backend) as cli, \
            Client(cli.smtp_port) as client:
        client.hello()
        # A first message starts what every message uses (worker threads).
        warm_up = queue_id(_bdat_small(client))
        baseline = cli.memory("VmRSS")
        client.envelope()
        client.send(f"BDAT {size} LAST\r\n".encode())
        # Made up as it is sent: the test does not hold the message either.
        # Each MiB differs (its number in front), so that a lost, doubled or
        # misplaced block changes the hash.
        block = os.urandom(MiB)
        sent = hashlib.sha256()
        for number in range(size // MiB):
            chunk = number.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            client.send(chunk)
        reply = client.reply()
        peak = cli.memory("VmHWM")  # the highest resident size the process ever had
        growth = peak - baseline
        assert growth < growth_limit, f"resident memory grew by {growth / MiB:.1f} MiB"
        big = queue_id(reply)
        names = files(cli.maildir, "new")
        assert [name.split(".")[:2] for name in names] == sorted(
            [warm_up.split("."), big.split(".")])
        [name] = [name for name in names if name.startswith(big + ".")]
        assert files(cli.maildir, "tmp") == []
    stored = hashlib.sha256()
    with open(tmp_path / "mail" / "new" / name, "rb") as file:
        headers = trace_length(file.read(4096))
        file.seek(headers)
        while data := file.read(4 * MiB):
            stored.update(data)
    assert (tmp_path / "mail" / "new" / name).stat().st_size == headers + size
    assert stored.hexdigest() == sent.hexdigest()


def _send_zeros(client: Client, count: int) -> None:
    block = bytes(MiB)
    while count:
        part = min(count, MiB)
        client.send(block[:part])
        count -= part


def test_the_default_size_limit_is_25_mib_and_size_0_lifts_it(tmp_path: Path) -> None:
    with CLIProcess(tmp_path / "mail") as cli, Client(cli.smtp_port) as client:
        assert f"SIZE {LIMIT}" in [line[4:] for line in client.hello().splitlines()]
        assert client.command(f"MAIL FROM:<a@example.org> SIZE={LIMIT + 1}").startswith(
            "552 5.3.4 ")
        assert client.command("MAIL FROM:<a@example.org> SIZE=1000000000000000").startswith(
            "552 5.3.4 ")
        # Unannounced: the client sends it all (RFC 3030: the octets of a
        # BDAT are read whatever the answer), then gets the refusal.
        assert client.command(f"MAIL FROM:<a@example.org> SIZE={LIMIT}").startswith("250 ")
        assert client.command("RCPT TO:<b@example.com>").startswith("250 ")
        client.send(f"BDAT {LIMIT + 1} LAST\r\n".encode())
        _send_zeros(client, LIMIT + 1)
        assert client.reply().startswith("552 5.3.4 ")
        # The connection's messages are handled one after the other: this
        # one's 250 means the refused one's handler is done.
        accepted = queue_id(_bdat_small(client))
        [name] = files(cli.maildir, "new")
        assert name.startswith(accepted + ".")
        assert files(cli.maildir, "tmp") == []

    with CLIProcess(tmp_path / "unlimited", "--size", "0") as cli, \
            Client(cli.smtp_port) as client:
        assert not [line for line in client.hello().splitlines() if "SIZE" in line]
        assert client.command("MAIL FROM:<a@example.org> SIZE=1000000000000000").startswith(
            "250 ")
        assert client.command("RCPT TO:<b@example.com>").startswith("250 ")
        client.send(f"BDAT {LIMIT + 1} LAST\r\n".encode())
        _send_zeros(client, LIMIT + 1)
        accepted = queue_id(client.reply())
        [name] = files(cli.maildir, "new")
        assert name.startswith(accepted + ".")
        path = cli.maildir / "new" / name
        with open(path, "rb") as file:
            headers = trace_length(file.read(4096))
        assert path.stat().st_size == headers + LIMIT + 1


@BACKENDS
def test_a_message_reset_midway_leaves_nothing(tmp_path: Path, backend: list[str]) -> None:
    with CLIProcess(tmp_path / "mail", *backend) as cli, Client(cli.smtp_port) as client:
        client.hello()
        client.envelope()
        # More than the server gathers before writing: its tmp/ file exists.
        client.send(f"BDAT {2 * MiB}\r\n".encode())
        _send_zeros(client, 2 * MiB)
        assert client.reply() == f"250 2.0.0 {2 * MiB} octets received"
        assert client.command("RSET").startswith("250 ")
        accepted = queue_id(_bdat_small(client))  # after the reset message's handler
        [name] = files(cli.maildir, "new")
        assert name.startswith(accepted + ".")
        assert without_trace((cli.maildir / "new" / name).read_bytes()) == b"ok\r\n"
        assert files(cli.maildir, "tmp") == []


@BACKENDS
def test_a_connection_lost_mid_data_leaves_nothing(tmp_path: Path, backend: list[str]) -> None:
    with CLIProcess(tmp_path / "mail", *backend) as cli:
        with Client(cli.smtp_port) as client:
            client.hello()
            client.envelope()
            assert client.command("DATA").startswith("354 ")
            line = b"x" * 998 + b"\r\n"
            client.send(b"Subject: cut short\r\n\r\n" + line * 2048)  # 2 MiB, no end
        # The graceful stop waits for the handlers: then all is settled.
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.proc.wait(TIMEOUT) == 0
        assert files(cli.maildir, "new") == []
        assert files(cli.maildir, "tmp") == []
