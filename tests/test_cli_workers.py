"""``python -m smtp_anyio --workers N``: N processes on one port, one
Maildir; SIGTERM drains them all; SIGHUP reloads the certificate files (in
one process too). Real processes, smtplib, trustme certificates."""

from __future__ import annotations

import re
import signal
import smtplib
import ssl
import sys
from pathlib import Path

import pytest
import trustme

from tests.example_programs import TIMEOUT, Program, without_trace
from tests.robustness.test_cli_support import files, queue_id


class CLI(Program):
    """The server on a free port; its log (standard error) is read with its
    output, so that a test can wait for a log line."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        argv = [sys.executable, "-m", "smtp_anyio", "--listen", "127.0.0.1:0",
                "--maildir", str(tmp_path / "mail"), *extra]
        super().__init__(["sh", "-c", 'exec "$@" 2>&1', "sh", *argv], cwd=tmp_path)
        self.smtp_port = self.port()
        self.wait_for(r"^delivering to ")


def test_two_workers_share_the_port_and_the_maildir(tmp_path: Path) -> None:
    with CLI(tmp_path, "--workers", "2", "-v") as cli:
        ids = []
        for number in range(40):  # a connection each: the kernel spreads them
            with smtplib.SMTP("127.0.0.1", cli.smtp_port, timeout=TIMEOUT) as client:
                client.ehlo()
                client.mail("a@example.org")
                client.rcpt("b@example.com")
                code, text = client.data(f"Subject: {number}\r\n\r\nbody\r\n".encode())
                assert code == 250
                ids.append(queue_id(text.decode()))
        pids = {re.search(r"P(\d+)Q", qid).group(1) for qid in ids}  # type: ignore[union-attr]
        assert len(pids) == 2, f"one worker took every connection: {pids}"
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.exit_status() == 0
    stored = files(tmp_path / "mail", "new")
    assert len(stored) == len(set(stored)) == 40
    assert sorted(name.rsplit(".", 1)[0] for name in stored) == sorted(ids)
    bodies = {without_trace((tmp_path / "mail" / "new" / name).read_bytes())
              for name in stored}
    assert bodies == {f"Subject: {n}\r\n\r\nbody\r\n".encode() for n in range(40)}


@pytest.mark.parametrize(("extra", "message"), [
    (["--workers", "0"], "argument --workers: expected a number of processes or auto"),
    (["--workers", "2", "--listen", "unix:/tmp/x.sock"],
     "--workers: a Unix socket cannot be shared by worker processes"),
])
def test_bad_worker_arguments_are_one_line(tmp_path: Path, extra: list[str],
                                           message: str) -> None:
    with Program([sys.executable, "-m", "smtp_anyio", *extra], cwd=tmp_path) as cli:
        assert cli.exit_status() == 2
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith(f"python -m smtp_anyio: error: {message}")


def _served_certificate(port: int, ca: trustme.CA) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
        client.starttls(context=context)
        assert client.sock is not None
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert der is not None
        return bytes(der)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_the_certificate_files(tmp_path: Path, workers: str) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = ca.issue_cert("localhost")
    first.cert_chain_pems[0].write_to_path(str(cert))
    first.private_key_pem.write_to_path(str(key))
    with CLI(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
             "--workers", workers, "-v") as cli:
        original = _served_certificate(cli.smtp_port, ca)
        second = ca.issue_cert("localhost")
        second.cert_chain_pems[0].write_to_path(str(cert))
        second.private_key_pem.write_to_path(str(key))
        cli.proc.send_signal(signal.SIGHUP)
        if workers == "1":
            cli.wait_for(r"^SIGHUP: certificates reloaded$")
            served = {_served_certificate(cli.smtp_port, ca)}
        else:
            # Each worker says so in the log; then any connection, whichever
            # worker takes it, gets the new certificate.
            reloaded = {cli.wait_for(r"worker (\d) \(pid \d+\): certificates reloaded").group(1)
                        for _ in range(2)}
            assert reloaded == {"0", "1"}
            served = set()
            for _ in range(10):
                served.add(_served_certificate(cli.smtp_port, ca))
        assert original not in served
        assert len(served) == 1
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.exit_status() == 0
