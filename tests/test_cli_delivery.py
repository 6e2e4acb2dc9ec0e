"""``python -m smtp_anyio`` as a delivery agent: the trace headers on each
stored message, a Maildir per recipient (with a reply per recipient in
LMTP when one mailbox fails), and ``--relay`` to another MTA. Real
processes, real clients (smtplib, raw sockets), a real relay (our own
server in a Controller)."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import socket
import sys
from pathlib import Path

import pytest

from smtp_anyio import RcptTo, Session, SMTPError
from smtp_anyio.testing import Controller, MessageLog
from tests.example_programs import TIMEOUT, Program, Raw, trace_length, without_trace
from tests.robustness.test_cli_support import CLIProcess, files, queue_id

BODY = b"Subject: hello\r\n\r\nHi there.\r\n"


def _headers(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data[:trace_length(data)] + b"\r\n",
                                       policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _stored(maildir: Path) -> list[bytes]:
    return [(maildir / "new" / name).read_bytes() for name in files(maildir, "new")]


# -- trace headers ------------------------------------------------------------------


def test_each_stored_message_starts_with_return_path_and_received(tmp_path: Path) -> None:
    with CLIProcess(tmp_path / "mail", "--name", "mx.example.net") as cli:
        with smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
            client.ehlo("client.example")
            client.sendmail("alice@example.org", ["bob@example.com"], BODY)
            client.sendmail("", ["carol@example.com", "dave@example.com"], BODY)
        cli.wait_for("to=<carol@example.com,dave@example.com>")
    one, bounce = sorted(_stored(cli.maildir), key=lambda data: b"<>" in data)
    headers = _headers(one)
    assert headers["Return-Path"] == "<alice@example.org>"
    assert "Delivered-To" not in headers  # one copy for the whole envelope
    received = " ".join(str(headers["Received"]).split())
    assert re.match(r"from client\.example \((localhost|unknown) \[127\.0\.0\.1\]\) "
                    r"by mx\.example\.net ", received), received
    assert " with ESMTP id " in received and " for <bob@example.com>; " in received
    assert without_trace(one) == BODY
    headers = _headers(bounce)
    assert headers["Return-Path"] == "<>"  # the null sender of a bounce
    assert " for <" not in str(headers["Received"])  # two recipients: no FOR clause
    assert without_trace(bounce) == BODY


def test_a_helo_name_that_is_no_domain_goes_into_a_comment(tmp_path: Path) -> None:
    with CLIProcess(tmp_path / "mail") as cli, Raw(cli.smtp_port) as raw:
        raw.reply()
        raw.command("EHLO not_a_domain")
        for line in ("MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "DATA"):
            raw.command(line)
        assert raw.command("x\r\n.")[0].startswith("250 ")
    [data] = _stored(cli.maildir)
    received = " ".join(str(_headers(data)["Received"]).split())
    assert re.match(r"from \[127\.0\.0\.1\] \((localhost|unknown) \[127\.0\.0\.1\]\) "
                    r"\(helo=not_a_domain\) by ", received), received


# -- a Maildir per recipient --------------------------------------------------------


def test_maildir_per_recipient_one_copy_per_mailbox(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    with CLIProcess(root, "--maildir-per-recipient") as cli:
        with smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
            refused = client.sendmail(
                "a@example.org", ["alice@example.com", "Bob@example.com", "ALICE@example.net"],
                BODY)
            assert refused == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused) as error:
                client.sendmail("a@example.org", ['"a/b"@example.com'], BODY)
            assert error.value.recipients['"a/b"@example.com'] == (
                553, b"5.1.3 Error: mailbox name not allowed")
        cli.wait_for(r"^bob/\S+ from=<a@example\.org> to=<Bob@example\.com> ")
    assert sorted(p.name for p in root.iterdir()) == ["alice", "bob"]  # lowercased
    [alice] = _stored(root / "alice")  # two of its addresses, one copy
    [bob] = _stored(root / "bob")
    assert _headers(alice)["Delivered-To"] == "alice@example.com"
    assert _headers(bob)["Delivered-To"] == "Bob@example.com"
    assert without_trace(alice) == without_trace(bob) == BODY


def _lmtp_send(port: int, recipients: list[str]) -> list[str]:
    """One LMTP transaction on a raw socket; the per-recipient replies."""
    with Raw(port) as raw:
        raw.reply()
        raw.command("LHLO client.example")
        raw.command("MAIL FROM:<a@example.org>")
        for recipient in recipients:
            assert raw.command(f"RCPT TO:<{recipient}>")[0].startswith("250 ")
        assert raw.command("DATA")[0].startswith("354 ")
        raw.send("Subject: x\r\n\r\nbody\r\n.\r\n")
        return [raw.reply()[0] for _ in recipients]


def test_lmtp_a_failing_mailbox_fails_only_its_recipient(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    (root / "bob").write_text("a file where bob's Maildir would go")
    with CLIProcess(root, "--lmtp", "--maildir-per-recipient") as cli:
        replies = _lmtp_send(cli.smtp_port, ["alice@example.com", "bob@example.com",
                                             "carol@example.com"])
        assert replies[0].startswith("250 2.0.0 OK: queued as ")
        assert replies[1] == "451 4.3.0 Error: local error in processing"
        assert replies[2].startswith("250 2.0.0 OK: queued as ")
        assert queue_id(replies[0]) != queue_id(replies[2])
    assert [len(_stored(root / name)) for name in ("alice", "carol")] == [1, 1]
    assert files(root / "alice", "tmp") == files(root / "carol", "tmp") == []


def test_smtp_a_failing_mailbox_fails_the_whole_message(tmp_path: Path) -> None:
    """One reply for all recipients: nothing may stay delivered, or the
    client's retry would deliver it twice."""
    root = tmp_path / "mail"
    root.mkdir()
    (root / "bob").write_text("in the way")
    with CLIProcess(root, "--maildir-per-recipient") as cli:
        with smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
            with pytest.raises(smtplib.SMTPDataError) as error:
                client.sendmail("a@example.org", ["alice@example.com", "bob@example.com"], BODY)
            assert error.value.smtp_code == 451
            client.sendmail("a@example.org", ["alice@example.com"], BODY)  # alone it goes
        cli.wait_for(r"^alice/")
    assert len(_stored(root / "alice")) == 1
    assert files(root / "alice", "tmp") == []


# -- --relay ------------------------------------------------------------------------


class RelayCLI(Program):
    def __init__(self, *extra: str) -> None:
        super().__init__([sys.executable, "-m", "smtp_anyio", "--listen", "127.0.0.1:0",
                          "--name", "relay.example.net", *extra])
        self.smtp_port = self.port()
        self.wait_for(r"^relaying to ")


def _refuse_nobody(address: RcptTo, session: Session) -> None:
    if address.address.startswith("nobody@"):
        raise SMTPError(550, "no such user", enhanced="5.1.1")


def test_relay_forwards_and_passes_on_the_relays_answers() -> None:
    log = MessageLog()
    with Controller(on_data=log, on_rcpt_to=_refuse_nobody,
                    auth_optional=True) as target:
        with RelayCLI("--relay", f"127.0.0.1:{target.port}") as cli, \
                smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
            refused = client.sendmail("alice@example.org",
                                      ["bob@example.com", "nobody@example.com"], BODY)
            # The relay's own refusal, at RCPT time, to our client.
            assert refused == {"nobody@example.com": (550, b"5.1.1 relay: no such user")}
            cli.wait_for(r"^relayed from=<alice@example\.org> to=<bob@example\.com> ")
            code, _ = client.rset()
            assert code == 250
            client.sendmail("carol@example.org", ["dave@example.com"], b"second\r\n")
        [first, second] = log.wait_for(2)
    assert first.mail_from == "alice@example.org"
    assert first.rcpt_to == ("bob@example.com",)
    # A hop adds Received (folded lines), not Return-Path, and changes nothing else.
    assert first.data.endswith(BODY)
    trace = first.data[:-len(BODY)].decode()
    assert trace.startswith("Received: from ") and trace.endswith("\r\n")
    assert all(line.startswith("\t") for line in trace.split("\r\n")[1:-1])
    assert " by relay.example.net" in " ".join(trace.split()) and "Return-Path" not in trace
    assert second.rcpt_to == ("dave@example.com",) and second.data.endswith(b"second\r\n")


def test_relay_down_answers_4xx_so_the_client_keeps_the_message() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # a port nobody listens on
        port = placeholder.getsockname()[1]
        with RelayCLI("--relay", f"127.0.0.1:{port}") as cli, \
                smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
            client.ehlo()
            code, text = client.mail("a@example.org")
            assert (code, text) == (451, b"4.4.1 Error: relay unavailable, try again later")


@pytest.mark.parametrize(("extra", "message"), [
    (["--backend", "trio"], "--relay needs asyncio or uvloop"),
    (["--maildir-per-recipient"], "--relay and --maildir-per-recipient do not go together"),
])
def test_relay_bad_combinations_are_one_line(extra: list[str], message: str) -> None:
    with Program([sys.executable, "-m", "smtp_anyio", "--relay", "127.0.0.1:25",
                  *extra]) as cli:
        assert cli.exit_status() == 2
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith(f"python -m smtp_anyio: error: {message}")


def test_relay_refusing_the_message_refuses_it_to_our_client() -> None:
    async def refuse(stream: object, session: Session) -> None:
        raise SMTPError(554, "spam, go away", enhanced="5.7.1")

    with Controller(on_data=refuse, auth_optional=True) as target, \
            RelayCLI("--relay", f"127.0.0.1:{target.port}") as cli, \
            smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPDataError) as error:
            client.sendmail("a@example.org", ["b@example.com"], BODY)
        assert (error.value.smtp_code, error.value.smtp_error) == (
            554, b"5.7.1 relay: spam, go away")
        # The relay's transaction was reset with ours: the next one goes through.
        assert client.mail("a@example.org")[0] == 250
