"""A real HAProxy in front of two server processes, configured by the docs'
own ``docs/examples/haproxy.cfg`` (ports from the environment): every
connection to a server starts with a PROXY v2 header, health checks
included, and the servers trust that header from 127.0.0.1 only.

- Clients bound to their own loopback addresses (127.0.0.2 to 127.0.0.9)
  send through HAProxy: every stored message's session shows the client's
  address, not HAProxy's, and both servers got messages.
- The trusted-proxies list holds: a client connecting straight to a server
  from 127.0.0.9 cannot forge its address with a PROXY line, and the
  trusted address without a header gets no SMTP at all.
- One server is killed with SIGKILL under load: the clients that lose their
  connection come back through HAProxy and send the same message again, the
  survivor takes them, HAProxy's health checks mark the dead one down, and
  every message answered 250 is stored.

HAProxy is found on the PATH (or /usr/sbin), else installed with apt-get
when running as root; without it the tests that need it are skipped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.example_programs import EXAMPLES, Program, Raw

from .support import BACKENDS, ServerProcess

CONFIG = EXAMPLES / "haproxy.cfg"
CLUSTER_BACKENDS = [b for b in ("asyncio", "sync") if b in BACKENDS]
SERVER_OPTIONS = {"use_proxy": ["127.0.0.1/32"], "socket_timeout": 30, "close_timeout": 5}
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]  # all on Linux's loopback
SOCKET_TIMEOUT = 15.0
INSTALL_TIMEOUT = 300.0
START_TIMEOUT = 10.0       # for HAProxy to answer, and to find each server well
DOWN_TIMEOUT = 15.0        # for its health checks to mark a dead server down (inter 1s, fall 2)
STORED = re.compile(r"stored as ([0-9a-f]{32}) for (\S+)")


# -- HAProxy: found, or installed, or the tests skipped ----------------------

def _which_haproxy() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    for candidate in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False)


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    return " / ".join(lines[-3:]) or "no output"


def _install_haproxy() -> str | None:
    """``apt-get install haproxy`` (after ``apt-get update`` if the package
    lists are missing); None once installed, else why not. Under xdist the
    workers take turns (a file lock): dpkg allows one at a time."""
    if os.geteuid() != 0:
        return "not running as root, so no apt-get install"
    if shutil.which("apt-get") is None:
        return "no apt-get to install it with"
    lock_path = Path(tempfile.gettempdir()) / "smtp-tests-haproxy-install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _which_haproxy():
            return None  # another worker installed it
        install = ["apt-get", "install", "-y", "-q", "haproxy"]
        try:
            result = _run(install, INSTALL_TIMEOUT)
            if result.returncode != 0 and re.search(
                    r"Unable to locate package|no installation candidate",
                    result.stdout + result.stderr):
                update = _run(["apt-get", "update", "-q"], INSTALL_TIMEOUT)
                if update.returncode != 0:
                    return f"apt-get update -q failed ({update.returncode}): {_tail(update)}"
                result = _run(install, INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            return f"{' '.join(map(str, exc.cmd))} took more than {exc.timeout:.0f} s"
        if result.returncode != 0:
            return f"apt-get install -y -q haproxy failed ({result.returncode}): {_tail(result)}"
        # The package may have started its own service (no policy-rc.d to
        # forbid it): stop it, the same way, so no haproxy is left running.
        if shutil.which("invoke-rc.d"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                _run(["invoke-rc.d", "haproxy", "stop"], 60)
    return None


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    found = _which_haproxy()
    if found is None:
        why = _install_haproxy()
        found = _which_haproxy()
        if found is None:
            why = why or "apt-get install haproxy succeeded, yet no haproxy binary"
            pytest.skip(f"haproxy is not on the PATH or in /usr/sbin, nor installable: {why}")
    return found


# -- The cluster: two servers behind HAProxy ---------------------------------

@dataclass
class Cluster:
    servers: list[ServerProcess]
    stores: list[Path]
    proxy: Program
    port: int  # HAProxy's frontend

    def wait_for_log(self, pattern: str, timeout: float) -> None:
        """Until HAProxy's stderr (its log) has a line matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.proxy.stderr, re.MULTILINE):
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} in HAProxy's log within {timeout} s:\n"
                            f"{self.proxy.stderr[-3000:]}")
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(proxy: Program, port: int) -> bool:
    """Connect to the frontend until a server's greeting comes back through
    it (bounded by START_TIMEOUT); False if HAProxy exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while proxy.proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                if sock.recv(4).startswith(b"220"):
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"HAProxy did not answer on port {port} within {START_TIMEOUT} s:\n"
                        f"{proxy.stderr}")
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _haproxy(binary: str, box_ports: list[int]) -> Iterator[tuple[Program, int]]:
    """``haproxy -f docs/examples/haproxy.cfg -db`` on a free port, answering;
    stopped (SIGTERM, else SIGKILL) on the way out, whatever happened."""
    for attempt in range(3):
        port = _free_port()
        with Program([binary, "-f", str(CONFIG), "-db"], SMTP_FRONTEND_PORT=str(port),
                     SMTP_BOX1_PORT=str(box_ports[0]),
                     SMTP_BOX2_PORT=str(box_ports[1])) as proxy:
            if _answers(proxy, port):
                yield proxy, port
                return
            status = proxy.exit_status()  # all its stderr read
        if "cannot bind" not in proxy.stderr or attempt == 2:  # else: the port was taken
            pytest.fail(f"haproxy exited ({status}):\n{proxy.stderr}")


@pytest.fixture(params=CLUSTER_BACKENDS)
def cluster(request: pytest.FixtureRequest, haproxy_binary: str,
            tmp_path: Path) -> Iterator[Cluster]:
    stores = [tmp_path / "box1", tmp_path / "box2"]
    with contextlib.ExitStack() as stack:
        servers = []
        for store in stores:
            store.mkdir()
            server = ServerProcess(request.param, options=SERVER_OPTIONS,
                                   handlers="store-peer", store=store)
            stack.enter_context(server)
            servers.append(server)
        proxy, port = stack.enter_context(_haproxy(haproxy_binary, [s.port for s in servers]))
        cluster = Cluster(servers, stores, proxy, port)
        for number, server in enumerate(servers, 1):
            # A health check reached the server with a PROXY v2 header (LOCAL:
            # the addresses are the connection's own), was let in, and
            # HAProxy found it well: greeting, HELO and QUIT answered.
            server.wait_for(r"^connect from 127\.0\.0\.1 \(PROXY v2 LOCAL\)$")
            cluster.wait_for_log(rf"server smtp_servers/box{number} succeeded, reason: "
                                 "Layer7 check passed", START_TIMEOUT)
        yield cluster


@dataclass(frozen=True)
class Copy:
    """A stored message: which server (0 or 1), its name, the session's
    address, the body."""

    box: int
    name: str
    peer: str
    body: bytes


def _stored(stores: list[Path], killed: int | None = None) -> dict[str, Copy]:
    """The messages in the stores, by name. The store of the server that was
    ``killed`` may hold a file half-written (``.NAME.tmp``) or a sidecar
    without its message: the SIGKILL came first, there was no 250 for it."""
    copies = {}
    for box, store in enumerate(stores):
        for path in store.iterdir():
            if path.name.startswith("."):
                assert box == killed, f"a half-written file: {path}"
            elif path.suffix != ".peer":
                peer = path.with_name(f"{path.name}.peer").read_text()
                copies[path.name] = Copy(box, path.name, peer, path.read_bytes())
    return copies


def _key(body: bytes) -> str:
    return body.split(b"\r\n", 1)[0].removeprefix(b"Message-Id: <").split(b"@")[0].decode()


def _body(key: str) -> bytes:
    return (f"Message-Id: <{key}@test>\r\nSubject: {key}\r\n\r\n"
            f"{'through HAProxy ' * (1 + len(key) % 7)}\r\n").encode()


def _send(client: smtplib.SMTP, body: bytes) -> tuple[str, str]:
    """MAIL, RCPT, DATA: the stored name and the address the server saw."""
    client.ehlo_or_helo_if_needed()
    client.mail("sender@example.org")
    client.rcpt("rcpt@example.com")
    code, reply = client.data(body)  # SMTPDataError unless 250
    found = STORED.search(reply.decode())
    assert found, f"{code} {reply!r}"
    return found.group(1), found.group(2)


def _connect(port: int, source: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, timeout=SOCKET_TIMEOUT, source_address=(source, 0))


# -- (a) the client's address, through the PROXY v2 header -------------------

def test_every_stored_message_shows_its_clients_own_address(cluster: Cluster) -> None:
    sent: dict[str, tuple[str, bytes]] = {}  # stored name: (source address, body)
    for round_ in range(3):  # a connection each: round robin takes turns
        for source in SOURCES:
            body = _body(f"{source}.{round_}")
            with _connect(cluster.port, source) as client:
                name, peer = _send(client, body)
            assert peer == source, f"the session of {source}'s message shows {peer}"
            sent[name] = (source, body)
    copies = _stored(cluster.stores)
    assert set(copies) == set(sent)
    for name, (source, body) in sent.items():
        assert (copies[name].peer, copies[name].body) == (source, body)
    per_box = [sum(c.box == box for c in copies.values()) for box in (0, 1)]
    assert min(per_box) >= len(sent) // 3, f"messages per server: {per_box}"
    assert not re.search(r"is DOWN|failed", cluster.proxy.stderr), cluster.proxy.stderr


# -- (b) the trusted-proxies list ---------------------------------------------

@pytest.mark.parametrize("backend", CLUSTER_BACKENDS)
def test_only_the_trusted_proxy_may_send_a_proxy_header(backend: str, tmp_path: Path) -> None:
    """No HAProxy needed: a server with the cluster's options, reached
    directly. 127.0.0.9 is not in use_proxy: its PROXY line is just an
    unknown command, and its message shows 127.0.0.9. 127.0.0.1 is: without
    a header it gets no reply at all."""
    server = ServerProcess(backend, options=SERVER_OPTIONS, handlers="store-peer",
                           store=tmp_path)
    with server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT,
                                        source_address=("127.0.0.9", 0))
        with Raw(server.port, sock) as raw:
            assert raw.reply()[0].startswith("220 ")
            forged = raw.command("PROXY TCP4 203.0.113.7 127.0.0.1 40000 25")
            assert forged[-1][:1] == "5", forged
            assert raw.command("EHLO forger.example")[-1].startswith("250 ")
            assert raw.command("MAIL FROM:<a@example.org>")[0].startswith("250 ")
            assert raw.command("RCPT TO:<b@example.com>")[0].startswith("250 ")
            assert raw.command("DATA")[0].startswith("354 ")
            reply = raw.command("Subject: forged\r\n\r\nfrom 203.0.113.7?\r\n.")
            found = STORED.search(reply[0])
            assert reply[0].startswith("250 ") and found, reply
            assert found.group(2) == "127.0.0.9"
        copies = _stored([tmp_path])
        assert [(c.name, c.peer) for c in copies.values()] == [(found.group(1), "127.0.0.9")]
        server.wait_for(r"^connect from 127\.0\.0\.9 \(no PROXY header\)$")
        with Raw(server.port) as raw:  # from 127.0.0.1, trusted: a header is a must
            raw.send("EHLO direct.example\r\n")
            assert raw.reply() == ["<closed>"]
        server.terminate()
        assert server.exit_status() == 0, server.stderr


# -- (c) a server killed under load --------------------------------------------

CLIENTS = 20
MESSAGES = 20
KILL_AFTER = CLIENTS * MESSAGES // 3   # 250s seen before the SIGKILL
RETRIES = 5                            # per message, each on a new connection


@dataclass
class Ledger:
    """What the clients were told (the stored name of each message answered
    250) and which messages needed another try."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    third: threading.Event = field(default_factory=threading.Event)

    def ack(self, key: str, name: str) -> None:
        with self.lock:
            assert key not in self.acknowledged
            self.acknowledged[key] = name
            if len(self.acknowledged) >= KILL_AFTER:
                self.third.set()

    def failed(self, key: str) -> int:
        with self.lock:
            self.retried[key] = self.retried.get(key, 0) + 1
            return self.retried[key]


def _client(port: int, index: int, ledger: Ledger) -> None:
    """MESSAGES messages over one connection through HAProxy; after an error
    or a lost connection, a new connection and the same message again."""
    source = SOURCES[index % len(SOURCES)]
    client: smtplib.SMTP | None = None
    number = 0
    while number < MESSAGES:
        key = f"{index}.{number}"
        try:
            if client is None:
                client = _connect(port, source)
            name, peer = _send(client, _body(key))
        except (smtplib.SMTPException, OSError) as exc:
            if client is not None:
                client.close()
                client = None
            if ledger.failed(key) > RETRIES:
                raise AssertionError(f"{key} failed {RETRIES + 1} times, last: {exc!r}") from exc
            continue
        assert peer == source, f"{key} from {source} shows {peer}"
        ledger.ack(key, name)
        number += 1
    assert client is not None
    client.quit()


def test_a_server_killed_under_load_loses_no_acknowledged_message(cluster: Cluster) -> None:
    ledger = Ledger()
    victim, survivor = cluster.servers
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_client, cluster.port, i, ledger) for i in range(CLIENTS)]
        assert ledger.third.wait(30), f"only {len(ledger.acknowledged)} acknowledged"
        victim.proc.kill()  # SIGKILL: no goodbye, connections reset mid-anything
        for future in futures:
            future.result(timeout=40)  # every client finished, within its retries
    cluster.wait_for_log(r"smtp_servers/box1 is DOWN", DOWN_TIMEOUT)
    assert not re.search(r"box2 (failed|is DOWN)", cluster.proxy.stderr), cluster.proxy.stderr
    assert len(ledger.acknowledged) == CLIENTS * MESSAGES

    copies = _stored(cluster.stores, killed=0)
    by_key: dict[str, list[Copy]] = {}
    for copy in copies.values():
        by_key.setdefault(_key(copy.body), []).append(copy)
    for key, name in ledger.acknowledged.items():
        assert name in copies, f"{key} was answered 250 as {name}, which is not stored"
        index = int(key.split(".")[0])
        for copy in by_key[key]:
            assert copy.body == _body(key)
            assert copy.peer == SOURCES[index % len(SOURCES)], (key, copy)
    assert set(by_key) == set(ledger.acknowledged)
    # A message may be stored twice: when the kill came after the victim had
    # stored it but before its 250 reached the client, the client sent it
    # again, to the survivor. Only a retried message, and once per server.
    for key, stored in by_key.items():
        assert len(stored) == 1 or (key in ledger.retried and {c.box for c in stored} == {0, 1}), (
            key, stored)
    # The victim had its share before the kill; the survivor took the retries.
    assert sum(c.box == 0 for c in copies.values()) > 0
    assert ledger.retried, "no client noticed the kill"
    for key in ledger.retried:
        assert copies[ledger.acknowledged[key]].box == 1, f"{key} retried, stored on the victim"
    assert survivor.proc.poll() is None
