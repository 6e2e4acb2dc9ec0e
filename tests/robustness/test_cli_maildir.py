"""The Maildir of ``python -m smtp_anyio``: an empty folder becomes one,
every message gets its own queue id and file (several in a second, several
processes on one Maildir), and a delivery that cannot complete leaves no
trace."""

from __future__ import annotations

import os
import smtplib
from collections import Counter
from pathlib import Path

import pytest

from smtp_anyio._maildir import MaildirStore
from tests.example_programs import TIMEOUT, without_trace
from tests.robustness.test_cli_support import CLIProcess, files, queue_id


def test_an_existing_empty_folder_becomes_a_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "empty"
    maildir.mkdir()
    with CLIProcess(maildir) as cli, \
            smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        code, text = client.data(b"Subject: first\r\n\r\nhello\r\n")
        assert code == 250  # before: 451, there being no tmp/
        accepted = queue_id(text)
        assert sorted(os.listdir(maildir)) == ["cur", "new", "tmp"]
        [name] = files(maildir, "new")
        assert name.startswith(accepted + ".")
        assert without_trace((maildir / "new" / name).read_bytes()) == (
            b"Subject: first\r\n\r\nhello\r\n")


def test_queue_ids_are_unique_within_a_second_and_across_processes(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    per_process = 150
    ids: list[str] = []
    with CLIProcess(maildir) as first, CLIProcess(maildir) as second, \
            smtplib.SMTP("127.0.0.1", first.smtp_port, timeout=TIMEOUT) as one, \
            smtplib.SMTP("127.0.0.1", second.smtp_port, timeout=TIMEOUT) as other:
        for client in (one, other):
            client.ehlo()
        for _ in range(per_process):
            for client in (one, other):
                client.mail("a@example.org")
                client.rcpt("b@example.com")
                code, text = client.data(b"hello\r\n")
                assert code == 250
                ids.append(queue_id(text))
    # Many messages shared a second: an id made of the second alone (as it
    # was) would repeat.
    assert max(Counter(i.partition(".")[0] for i in ids).values()) > 1
    assert len(set(ids)) == 2 * per_process
    # Two processes, each with its own P part, wrote into one Maildir.
    assert len({i.partition("P")[2].partition("Q")[0] for i in ids}) == 2
    names = files(maildir, "new")
    assert len(names) == 2 * per_process
    assert sorted(name.rpartition(".")[0] for name in names) == sorted(ids)
    assert files(maildir, "tmp") == []


def test_delivery_is_atomic_and_leaves_no_trace_when_it_fails(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "mail")
    delivery = store.begin()
    delivery.write([b"part ", b"one\r\n"])
    assert files(store.path, "tmp") == [delivery.name]
    assert files(store.path, "new") == []  # nothing visible before commit
    assert delivery.commit([b"part two\r\n"]) == delivery.name
    assert files(store.path, "tmp") == []
    assert (store.path / "new" / delivery.name).read_bytes() == b"part one\r\npart two\r\n"
    delivery.discard()  # after commit: the message stays
    assert files(store.path, "new") == [delivery.name]

    dropped = store.begin()
    dropped.write([b"never delivered"])
    dropped.discard()
    assert files(store.path, "tmp") == []
    with pytest.raises(ValueError):
        dropped.write([b"more"])

    # A name taken in new/ is never overwritten: the delivery fails whole.
    clash = store.begin()
    (store.path / "new" / clash.name).write_bytes(b"the other message")
    with pytest.raises(FileExistsError):
        clash.commit([b"this message"])
    assert (store.path / "new" / clash.name).read_bytes() == b"the other message"
    assert files(store.path, "tmp") == []
