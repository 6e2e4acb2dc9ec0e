"""Worker processes (``run_workers()``), for real: a supervisor and its
workers as processes of their own, clients over 127.0.0.1.

The program under test is ``tests/server/workers_app.py``; the tests read
the supervisor's log lines as they come (``Program``) and never sleep to
wait for readiness: a worker is ready when the supervisor says so, a
restart when its log line appears. Which worker served a client shows in
its greeting, which names the worker's pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
import trustme

import smtp_anyio
import smtp_sync
from smtp_server import worker_count

from ..example_programs import ROOT, TIMEOUT, Program, Raw
from .harness import available_backends

APP = Path(__file__).resolve().parent / "workers_app.py"

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"),
    reason="worker processes need fork() and SO_REUSEPORT")


def _backends() -> list[str]:
    return available_backends()


BACKENDS = _backends()
CORE_BACKENDS = [name for name in BACKENDS if name != "uvloop"]
CONNECTIONS = 200  # bound on the clients needed to meet every worker


class Supervisor(Program):
    """workers_app.py running: its ports, its workers' pids by index."""

    def __init__(self, backend: str, *args: str) -> None:
        super().__init__([sys.executable, str(APP), backend, *args], cwd=ROOT)
        started = self.wait_for(r"starting (\d+) workers on (.*) \(supervisor pid (\d+)\)$")
        self.count = int(started.group(1))
        self.ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", started.group(2))]
        self.pids: dict[int, int] = {}
        self.log: list[str] = []

    def next_line(self) -> str:
        line = self.line()
        self.log.append(line)
        found = re.search(r"worker (\d+) \(pid (\d+)\) ready$", line)
        if found:
            self.pids[int(found.group(1))] = int(found.group(2))
        return line

    def until(self, pattern: str) -> re.Match[str]:
        """Read log lines until one matches ``pattern``."""
        for _ in range(500):
            found = re.search(pattern, self.next_line())
            if found:
                return found
        pytest.fail(f"{pattern!r} not in {self.log[-20:]}")

    def ready(self) -> dict[int, int]:
        self.until(rf"all {self.count} workers ready$")
        assert len(self.pids) == self.count
        return dict(self.pids)

    def stopped(self) -> int:
        """SIGTERM to the supervisor; its exit status, every worker's exit logged."""
        self.proc.send_signal(signal.SIGTERM)
        self.until(r"all workers have exited$")
        return self.exit_status()


@pytest.fixture
def supervisor() -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def start(backend: str, *args: str) -> Supervisor:
        program = Supervisor(backend, *args)
        started.append(program)
        return program

    yield start
    for program in started:
        program.__exit__(None, None, None)


def greeting_pid(port: int, context: ssl.SSLContext | None = None,
                 names: list[str] | None = None) -> int:
    """Connect, read the greeting, say QUIT: the pid of the worker that
    answered. Over TLS (``context``), the certificate's common name is
    appended to ``names``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
        subject = dict(rdn[0] for rdn in sock.getpeercert()["subject"])
        if names is not None:
            names.append(subject["commonName"])
    with Raw(port, sock=sock) as raw:
        greeting = raw.reply()[0]
        found = re.match(r"220 pid(\d+)\.example ", greeting)
        assert found, greeting
        raw.command("QUIT")
    return int(found.group(1))


def meet(port: int, pids: set[int], context: ssl.SSLContext | None = None,
         names: list[str] | None = None) -> set[int]:
    """Connect until every pid of ``pids`` has answered; what answered."""
    seen: set[int] = set()
    for _ in range(CONNECTIONS):
        seen.add(greeting_pid(port, context, names))
        if pids <= seen:
            return seen
    pytest.fail(f"{CONNECTIONS} connections met {seen}, not all of {pids}")


# -- one port, several processes; a dead worker comes back ------------------------------


@pytest.mark.parametrize("share", ["reuse_port", "inherit"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_workers_share_a_port_and_a_killed_worker_is_restarted(
        supervisor: Callable[..., Supervisor], backend: str, share: str) -> None:
    """Each worker binds the port (SO_REUSEPORT), or all accept on the
    supervisor's socket (inherited: where the OS has no SO_REUSEPORT)."""
    program = supervisor(backend, "--workers", "2", "--share", share)
    [port] = program.ports
    assert port != 0
    pids = program.ready()
    assert len(set(pids.values())) == 2
    assert os.getpid() not in pids.values()
    assert meet(port, set(pids.values())) == set(pids.values())

    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    program.until(rf"worker 0 \(pid {victim}\) was killed by signal 9 \(SIGKILL\); "
                  r"restarting it in 0\.5 s$")
    program.until(r"worker 0 \(pid \d+\) ready$")
    successor = program.pids[0]
    assert successor not in (victim, pids[1])
    assert meet(port, {successor, pids[1]}) == {successor, pids[1]}
    assert program.stopped() == 0
    exits = [line for line in program.log if re.search(r"\) exited with status 0$", line)]
    assert len(exits) == 2, program.log


# -- SIGTERM drains ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", CORE_BACKENDS)
def test_sigterm_lets_a_message_in_flight_finish(
        supervisor: Callable[..., Supervisor], backend: str) -> None:
    program = supervisor(backend, "--workers", "2")
    [port] = program.ports
    pids = program.ready()
    with Raw(port) as raw:
        greeting = raw.reply()
        served_by = int(re.match(r"220 pid(\d+)", greeting[0]).group(1))  # type: ignore[union-attr]
        assert served_by in pids.values()
        assert raw.command("EHLO client.example")[-1].startswith("250 ")
        assert raw.command("MAIL FROM:<alice@example.org>")[0].startswith("250 ")
        assert raw.command("RCPT TO:<bob@example.com>")[0].startswith("250 ")
        assert raw.command("DATA")[0].startswith("354 ")
        raw.send("Subject: in flight\r\n\r\nthe first half, ")
        program.proc.send_signal(signal.SIGTERM)
        program.until(rf"worker \d \(pid {served_by}\): SIGTERM, closing$")
        raw.send("and the second.\r\n.\r\n")
        assert raw.reply()[0].startswith("250 ")
        assert raw.reply()[0].startswith("421 ")  # then the session ends
    program.until(r"all workers have exited$")
    assert program.exit_status() == 0
    exits = [line for line in program.log if re.search(r"\) exited with status 0$", line)]
    assert len(exits) == 2, program.log


# -- SIGHUP reloads certificates -----------------------------------------------------------


def write_leaf(ca: trustme.CA, common_name: str, cert: Path, key: Path) -> None:
    leaf = ca.issue_cert("localhost", common_name=common_name)
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())


@pytest.mark.parametrize("backend", CORE_BACKENDS)
def test_sighup_makes_every_worker_serve_the_new_certificate(
        supervisor: Callable[..., Supervisor], backend: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_leaf(ca, "old", cert, key)
    program = supervisor(backend, "--workers", "2", "--cert", str(cert), "--key", str(key))
    _, tls_port = program.ports
    pids = set(program.ready().values())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    names: list[str] = []  # the certificate's name, connection by connection
    assert meet(tls_port, pids, context, names) == pids
    assert set(names) == {"old"}
    write_leaf(ca, "new", cert, key)
    program.proc.send_signal(signal.SIGHUP)
    program.until(r"SIGHUP: reloading certificates in 2 workers$")
    reloaded = set()
    while reloaded != pids:
        found = program.until(r"worker \d \(pid (\d+)\): certificates reloaded$")
        reloaded.add(int(found.group(1)))
    names.clear()
    assert meet(tls_port, pids, context, names) == pids
    assert set(names) == {"new"}
    assert program.stopped() == 0


# -- the supervisor ------------------------------------------------------------------


def test_workers_stop_when_the_supervisor_is_killed(
        supervisor: Callable[..., Supervisor]) -> None:
    program = supervisor("asyncio", "--workers", "2")
    pids = program.ready()
    program.proc.kill()
    assert program.proc.wait(TIMEOUT) == -signal.SIGKILL
    gone = set()
    while gone != set(pids.values()):
        found = program.until(r"worker \d \(pid (\d+)\): the supervisor is gone; stopping$")
        gone.add(int(found.group(1)))
    # Standard output ends once the last process holding it has exited.
    program._pumps[0].join(TIMEOUT)
    assert not program._pumps[0].is_alive()


def test_workers_that_cannot_start_end_the_supervisor_with_status_1(
        supervisor: Callable[..., Supervisor]) -> None:
    program = supervisor("sync", "--workers", "2", "--fail")
    program.until(r"worker \d \(pid \d+\) failed$")  # with its traceback:
    program.until(r"^RuntimeError: this worker cannot start$")
    program.until(r"worker \d \(pid \d+\) exited with status 1 before it was ready: "
                  r"the workers cannot start; stopping$")
    program.until(r"all workers have exited$")
    assert program.exit_status() == 1


def test_auto_is_one_worker_per_usable_cpu(supervisor: Callable[..., Supervisor]) -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    assert worker_count("auto") == expected
    program = supervisor("sync", "--workers", "auto")
    assert program.count == expected
    assert len(program.ready()) == expected
    assert program.stopped() == 0


RUNNERS = {
    "anyio": smtp_anyio.run_workers,
    "sync": smtp_sync.run_workers,
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize(("workers", "error"), [
    (0, ValueError), (-1, ValueError), ("many", TypeError), (1.5, TypeError),
    (True, TypeError), (None, TypeError),
])
def test_invalid_worker_counts_are_refused_before_any_fork(
        runner: str, workers: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="workers must be"):
        RUNNERS[runner](lambda: None, [("127.0.0.1", 0)], workers=workers)  # type: ignore[arg-type]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize(("listeners", "error"), [
    ([], ValueError), ([("127.0.0.1",)], ValueError), ([("127.0.0.1", 70000)], ValueError),
    ([(1, 25)], TypeError), ([("127.0.0.1", 25, "yes")], TypeError), (["127.0.0.1:25"], ValueError),
])
def test_invalid_listeners_are_refused(
        runner: str, listeners: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="listener"):
        RUNNERS[runner](lambda: None, listeners, workers=1)  # type: ignore[arg-type]


def test_anyio_backend_is_checked_and_no_event_loop_may_run() -> None:
    with pytest.raises(ValueError, match="backend"):
        smtp_anyio.run_workers(smtp_anyio.SMTPServer, [("127.0.0.1", 0)], backend="uvloop")

    async def inside() -> None:
        smtp_anyio.run_workers(smtp_anyio.SMTPServer, [("127.0.0.1", 0)], workers=1)

    for backend in ("asyncio", "trio"):
        with pytest.raises(RuntimeError, match="outside any event loop"):
            anyio.run(inside, backend=backend)
