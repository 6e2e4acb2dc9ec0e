"""Our servers against the incumbents, same workloads, same run.

Run from the repository root (with the ``bench`` extra and uvloop and trio
installed, e.g. ``pip install -e ".[bench,uvloop,trio]"``)::

    python bench/run.py                       # everything, 3 interleaved rounds
    python bench/run.py --quick               # fewer messages, 2 rounds: a smoke run
    python bench/run.py --only W2,W4 --servers smtp_anyio-uvloop,smtp-server
    python bench/run.py --rounds 5 --out bench/results
    python bench/run.py --only W2 --servers smtp_anyio-uvloop --profile smtp_anyio-uvloop

Each measurement starts a fresh sink (``bench/servers/``), loads it, reads
its CPU time and memory from ``/proc``, stops it with SIGTERM and checks its
message count. Workloads run one after another; inside a workload the
servers take turns (A B C ... A B C ...) for ``--rounds`` rounds, so that a
change in machine load hits every server alike. The load generator is
Postfix's ``smtp-source`` (W1 to W4; unpacked from the Debian package into
``bench/.scratch``, never installed) and ``bench/loadgen.py`` (W5 to W7).

Output: a Markdown table on stdout, ``<out>/results.json`` (every run),
``<out>/bench-servers.png``, and, for a complete run (all workloads and
servers, not ``--quick``), ``docs/server/performance.rst`` with the chart
copied to ``docs/_static/bench-servers.png``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import loadgen
import report

import smtp_proto

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SINKS = BENCH / "servers"
SCRATCH = BENCH / ".scratch"
POSTFIX_DIR = SCRATCH / "postfix"
NODE_DIR = SCRATCH / "node"
TLS_DIR = SCRATCH / "tls"
HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB

REFERENCE = "smtp_anyio-uvloop"
CEILING = "ceiling-uvloop"


# -- servers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    kind: str  # "ours", "incumbent" or "ceiling"
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    python: bool = True
    threaded: bool = False  # profiles sample only the thread holding the GIL


def all_servers(node: Path | None) -> list[Server]:
    py = sys.executable
    servers = [
        Server("smtp_anyio-uvloop", "ours",
               (py, str(SINKS / "anyio_sink.py"), "--backend", "uvloop")),
        Server("smtp_anyio-asyncio", "ours",
               (py, str(SINKS / "anyio_sink.py"), "--backend", "asyncio")),
        Server("smtp_anyio-trio", "ours",
               (py, str(SINKS / "anyio_sink.py"), "--backend", "trio")),
        Server("smtp_sync", "ours", (py, str(SINKS / "sync_sink.py")), threaded=True),
        # Two worker processes on one port (run_workers, SO_REUSEPORT):
        # the "Running at scale" ratio, against the one-process rows.
        Server("smtp_anyio-uvloop-2w", "ours",
               (py, str(SINKS / "anyio_sink.py"), "--backend", "uvloop", "--workers", "2")),
        Server("smtp_sync-2w", "ours", (py, str(SINKS / "sync_sink.py"), "--workers", "2"),
               threaded=True),
        Server("aiosmtpd-asyncio", "incumbent",
               (py, str(SINKS / "aiosmtpd_sink.py"), "--backend", "asyncio")),
        Server("aiosmtpd-uvloop", "incumbent",
               (py, str(SINKS / "aiosmtpd_sink.py"), "--backend", "uvloop")),
    ]
    # The same servers on the core's pure-Python source (issue 13: both builds
    # side by side); only where the installed core is compiled.
    if smtp_proto.COMPILED:
        pure = {pure for _, pure in report.BUILD_PAIRS}
        at = next(i for i, s in enumerate(servers) if s.kind == "incumbent")
        servers[at:at] = [
            replace(s, name=f"{s.name}-pure", env=(*s.env, ("SMTP_PROTO_PURE", "1")))
            for s in servers if f"{s.name}-pure" in pure]
    if node is not None:
        servers.append(Server(
            "smtp-server", "incumbent", (str(node), str(SINKS / "smtp_server_sink.js")),
            env=(("NODE_PATH", str(NODE_DIR / "node_modules")),), python=False))
    servers += [
        Server("ceiling-asyncio", "ceiling",
               (py, str(SINKS / "raw_sink.py"), "--backend", "asyncio")),
        Server("ceiling-uvloop", "ceiling",
               (py, str(SINKS / "raw_sink.py"), "--backend", "uvloop")),
    ]
    return servers


class SinkProcess:
    """A running sink: its port and pid (from the READY line), CPU and RSS."""

    live: ClassVar[set[SinkProcess]] = set()

    def __init__(self, server: Server, *, tls: bool, log: Path,
                 profile: Path | None = None) -> None:
        argv = list(server.argv)
        if tls:
            argv += ["--tls-cert", str(TLS_DIR / "cert.pem"),
                     "--tls-key", str(TLS_DIR / "key.pem"), "--secure"]
        if profile is not None:
            py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
            gil = ["--gil"] if server.threaded else []
            argv = [py_spy, "record", "-r", "300", "-f", "raw", *gil, "-o", str(profile), "--",
                    *argv]
        env = dict(os.environ, **dict(server.env))
        self.log = log.open("ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, env=env,
                                     cwd=ROOT)
        SinkProcess.live.add(self)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError(f"{server.name} did not print READY (see {log})")
        fields = dict(part.split("=", 1) for part in self.lines[0].split()[1:])
        self.port = int(fields["port"])
        self.pid = int(fields["pid"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(("READY", "STATS")):
                self.lines.append(line)
                if line.startswith("READY"):
                    self._ready.set()

    def _processes(self) -> list[int]:
        """The server's process and its worker processes (``--workers``)."""
        pids = [self.pid]
        for pid in pids:
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as fh:
                        pids += [int(child) for child in fh.read().split()]
        return pids

    def cpu_times(self) -> tuple[float, float]:
        """User and system time of the server (all its threads and workers)."""
        tick = os.sysconf("SC_CLK_TCK")
        user = system = 0.0
        for pid in self._processes():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    parts = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                if pid == self.pid:
                    return float("nan"), float("nan")
                continue
            user += int(parts[11]) / tick
            system += int(parts[12]) / tick
        return user, system

    def rss_kib(self) -> int:
        total = 0
        for pid in self._processes():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        if not total:
            raise RuntimeError("no VmRSS")
        return total

    def stop(self) -> dict[str, int]:
        """SIGTERM; returns the sink's STATS counters (empty if none)."""
        with contextlib.suppress(ProcessLookupError, AttributeError):
            os.kill(self.pid, signal.SIGTERM)
        if not hasattr(self, "pid"):
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self.log.close()
        SinkProcess.live.discard(self)
        totals: dict[str, int] = {}
        for line in self.lines:  # one per worker process with --workers
            if line.startswith("STATS"):
                for key, value in (p.split("=") for p in line.split()[1:]):
                    totals[key] = totals.get(key, 0) + int(value)
        return totals


def _cpu_used(before: tuple[float, float], after: tuple[float, float]) -> dict[str, float]:
    user, system = after[0] - before[0], after[1] - before[1]
    return {"server_cpu": user + system, "server_sys": system}


# -- workloads ---------------------------------------------------------------------


@dataclass
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    params: dict[str, Any]
    limit: float  # seconds: every load loop is also bounded in time
    tls: bool = False
    smtp_source: bool = False
    client_procs: int = 1  # processes of the load generator (CPU it can use)


def workloads(quick: bool) -> list[Workload]:
    q = 4 if quick else 1  # --quick divides the message counts
    w1, w2, w3, w4, w6, w7 = 2000 // q, 20000 // q, 5000 // q, 20 // q, 4000 // q, 20000 // q
    return [
        Workload("W1", f"one session, {w1:,} x 1 KiB", "msg/s", True,
                 {"sessions": 1, "messages": w1, "length": KiB, "reuse": True},
                 30, smtp_source=True),
        Workload("W2", f"20 sessions, {w2:,} x 1 KiB", "msg/s", True,
                 {"sessions": 20, "messages": w2, "length": KiB, "reuse": True},
                 60, smtp_source=True),
        Workload("W3", f"a new connection per message, 10 parallel, {w3:,} x 1 KiB", "msg/s",
                 True, {"sessions": 10, "messages": w3, "length": KiB, "reuse": False},
                 8 if quick else 20, smtp_source=True),
        Workload("W4", f"{w4} x 10 MiB over one session", "MB/s", True,
                 {"sessions": 1, "messages": w4, "length": 10 * MiB, "reuse": True},
                 60, smtp_source=True),
        Workload("W5", "1,000 idle connections after EHLO", "KiB/conn", False,
                 {"connections": 1000}, 60),
        Workload("W6", "implicit-TLS handshake + greeting, 2 x 100 concurrent clients",
                 "handshakes/s", True, {"procs": 2, "concurrency": 100, "count": w6},
                 8 if quick else 10, tls=True, client_procs=2),
        Workload("W7", f"pipelining client, 20 sessions, {w7:,} x 1 KiB", "msg/s", True,
                 {"procs": 2, "sessions": 20, "messages": w7, "length": KiB}, 30,
                 client_procs=2),
    ]


@dataclass
class Tools:
    smtp_source: Path
    smtp_source_version: str
    node: Path | None
    smtp_server_version: str | None


def _wait_timed(proc: subprocess.Popen[bytes], limit: float) -> tuple[float, float, bool]:
    """Wait for ``proc`` (killing it after ``limit`` seconds); returns the
    elapsed seconds, its CPU seconds (with reaped children) and whether it
    was cut off. Timed from just before the call."""
    started = time.perf_counter()
    box: dict[str, Any] = {}

    def reap() -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        box["end"] = time.perf_counter()
        box["status"] = status
        box["cpu"] = usage.ru_utime + usage.ru_stime

    waiter = threading.Thread(target=reap, daemon=True)
    waiter.start()
    waiter.join(limit)
    timed_out = waiter.is_alive()
    if timed_out:
        proc.kill()
        waiter.join()
    proc.returncode = os.waitstatus_to_exitcode(box["status"])
    elapsed = (limit if timed_out else box["end"] - started)
    return elapsed, box["cpu"], timed_out


def run_smtp_source(tools: Tools, wl: Workload, sink: SinkProcess) -> dict[str, Any]:
    p = wl.params
    argv = [str(tools.smtp_source), "-s", str(p["sessions"]), "-m", str(p["messages"]),
            "-l", str(p["length"]), "-M", "bench.localhost", "-f", loadgen.SENDER,
            "-t", loadgen.SENDER]
    if p["reuse"]:
        argv.append("-d")
    argv.append(f"{HOST}:{sink.port}")
    env = dict(os.environ,
               LD_LIBRARY_PATH=str(tools.smtp_source.parent.parent / "lib" / "postfix"))
    cpu0 = sink.cpu_times()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed, client_cpu, timed_out = _wait_timed(proc, wl.limit)
    cpu = _cpu_used(cpu0, sink.cpu_times())
    assert proc.stderr is not None
    errors = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    return {"seconds": elapsed, "client_cpu": client_cpu, **cpu, "timed_out": timed_out,
            "expected": p["messages"], "client_errors": "" if timed_out else errors[-300:],
            "exit": proc.returncode}


def run_loadgen(args: list[str], wl: Workload, sink: SinkProcess) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "loadgen.py"), *args, "--port", str(sink.port),
            "--seconds", str(wl.limit)]
    cpu0 = sink.cpu_times()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, client_cpu, timed_out = _wait_timed(proc, wl.limit + 30)
    cpu = _cpu_used(cpu0, sink.cpu_times())
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read().decode(errors="replace").strip()
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stdout.close()
    proc.stderr.close()
    if timed_out or not out:
        raise RuntimeError(f"loadgen failed: {err[-300:]}")
    result = json.loads(out.splitlines()[-1])
    return {"seconds": result["seconds"], "done": result["done"], "errors": result["errors"],
            "client_cpu": client_cpu, **cpu, "timed_out": result["seconds"] >= wl.limit,
            "client_errors": err[-300:]}


def run_idle(wl: Workload, sink: SinkProcess) -> dict[str, Any]:
    count = wl.params["connections"]

    async def scenario() -> dict[str, Any]:
        # Warm up (first-connection costs: imports, caches), then measure.
        writers, _ = await loadgen.open_idle(sink.port, 20, timeout=wl.limit)
        loadgen.close_all(writers)
        await asyncio.sleep(0.5)
        before = sink.rss_kib()
        cpu0 = sink.cpu_times()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        writers, seconds = await loadgen.open_idle(sink.port, count, timeout=wl.limit)
        try:
            await asyncio.sleep(1.0)
            after = sink.rss_kib()
        finally:
            loadgen.close_all(writers)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(0.2)
        return {"rss_before_kib": before, "rss_after_kib": after, "seconds": seconds,
                **_cpu_used(cpu0, sink.cpu_times()),
                "client_cpu": (usage1.ru_utime + usage1.ru_stime)
                - (usage0.ru_utime + usage0.ru_stime),
                "value": (after - before) / count, "done": count, "timed_out": False}

    return asyncio.run(scenario())


def measure(tools: Tools, wl: Workload, server: Server, log: Path,
            profile: Path | None) -> dict[str, Any]:
    sink = SinkProcess(server, tls=wl.tls, log=log, profile=profile)
    stats: dict[str, int] = {}
    try:
        if wl.smtp_source:
            result = run_smtp_source(tools, wl, sink)
        elif wl.key == "W5":
            result = run_idle(wl, sink)
        elif wl.key == "W6":
            p = wl.params
            result = run_loadgen(["tls", "--procs", str(p["procs"]), "--concurrency",
                                  str(p["concurrency"]), "--count", str(p["count"])], wl, sink)
        else:
            p = wl.params
            result = run_loadgen(["pipeline", "--procs", str(p["procs"]), "--sessions",
                                  str(p["sessions"]), "--messages", str(p["messages"]),
                                  "--length", str(p["length"])], wl, sink)
    finally:
        stats = sink.stop()
    result["server_messages"] = stats.get("messages")
    result["server_bytes"] = stats.get("bytes")
    seconds = result["seconds"]
    if wl.smtp_source:
        # Messages the server read to the end (all of them unless cut off).
        done = stats.get("messages", 0)
        result["done"] = done
        if not result["timed_out"] and (result["exit"] != 0 or done != result["expected"]):
            result["problem"] = (f"server counted {done}/{result['expected']} messages, "
                                 f"smtp-source exit {result['exit']}: {result['client_errors']}")
        amount = done * wl.params["length"] / 1e6 if wl.unit == "MB/s" else done
        result["value"] = amount / seconds
    elif wl.key == "W6":
        result["value"] = result["done"] / seconds
        if result["errors"]:
            result["problem"] = f"{result['errors']} failed handshakes"
    elif wl.key == "W7":
        result["value"] = result["done"] / seconds
        if result["errors"] or (not result["timed_out"]
                                and stats.get("messages") != wl.params["messages"]):
            result["problem"] = (f"{result['errors']} client errors, server counted "
                                 f"{stats.get('messages')}/{wl.params['messages']}")
    timed = seconds and wl.key != "W5"  # W5 measures memory; its CPU shares mean little
    result["server_cpu_share"] = result["server_cpu"] / seconds if timed else None
    result["client_cpu_share"] = result["client_cpu"] / seconds if timed else None
    result["server_sys_share"] = result["server_sys"] / seconds if timed else None
    if timed and result.get("done"):
        result["server_cpu_us_per_item"] = 1e6 * result["server_cpu"] / result["done"]
    return result


# -- tools: smtp-source, smtp-server, a certificate ------------------------------------


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("  $", " ".join(argv), file=sys.stderr)
    return subprocess.run(argv, text=True, capture_output=True, check=False, **kwargs)


def find_smtp_source(given: str | None) -> tuple[Path, str]:
    """smtp-source from --smtp-source, or unpacked from the Debian package
    into bench/.scratch/postfix (``apt-get download`` + ``dpkg -x``; the
    package is never installed and no service started)."""
    if given:
        return Path(given).resolve(), "unknown (given with --smtp-source)"
    binary = POSTFIX_DIR / "usr" / "sbin" / "smtp-source"
    version_file = POSTFIX_DIR / "VERSION"
    if not binary.exists():
        print("fetching smtp-source from the Debian postfix package", file=sys.stderr)
        SCRATCH.mkdir(parents=True, exist_ok=True)
        for old in SCRATCH.glob("postfix_*.deb"):
            old.unlink()
        got = _run(["apt-get", "download", "postfix"], cwd=SCRATCH)
        if got.returncode != 0 and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"])
            got = _run(["apt-get", "download", "postfix"], cwd=SCRATCH)
        debs = sorted(SCRATCH.glob("postfix_*.deb"))
        if got.returncode != 0 or not debs:
            sys.exit(f"could not download postfix: {got.stderr.strip()}\n"
                     "give a smtp-source binary with --smtp-source PATH")
        unpacked = _run(["dpkg", "-x", str(debs[-1]), str(POSTFIX_DIR)])
        if unpacked.returncode != 0 or not binary.exists():
            sys.exit(f"dpkg -x failed: {unpacked.stderr.strip()}")
        version = _run(["dpkg-deb", "-f", str(debs[-1]), "Version"]).stdout.strip()
        version_file.write_text(version + "\n")
    version = version_file.read_text().strip() if version_file.exists() else "unknown"
    return binary, f"Postfix {version}"


def find_smtp_server(enabled: bool) -> tuple[Path | None, str | None]:
    """node, with nodemailer's smtp-server installed into bench/.scratch/node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not enabled or node is None or npm is None:
        print("node or npm not found: smtp-server left out", file=sys.stderr)
        return None, None
    package = NODE_DIR / "node_modules" / "smtp-server" / "package.json"
    if not package.exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        manifest = NODE_DIR / "package.json"
        if not manifest.exists():
            manifest.write_text('{"private": true, "description": "bench scratch"}\n')
        got = _run([npm, "install", "--no-audit", "--no-fund", "--silent", "smtp-server@3"],
                   cwd=NODE_DIR)
        if got.returncode != 0 or not package.exists():
            print(f"npm install smtp-server failed: {got.stderr.strip()[-500:]}", file=sys.stderr)
            return None, None
    return Path(node), json.loads(package.read_text())["version"]


def make_certificate() -> None:
    """A self-signed RSA-2048 certificate for 127.0.0.1 (W6)."""
    cert, key = TLS_DIR / "cert.pem", TLS_DIR / "key.pem"
    if cert.exists() and key.exists():
        return
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    got = _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                "-keyout", str(key), "-out", str(cert), "-subj", "/CN=bench.localhost",
                "-addext", "subjectAltName=DNS:bench.localhost,IP:127.0.0.1"])
    if got.returncode != 0:
        sys.exit(f"openssl could not make a certificate: {got.stderr.strip()}")


# -- the machine ------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(tools: Tools) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node_version = None
    if tools.node is not None:
        node_version = subprocess.run([str(tools.node), "--version"], capture_output=True,
                                      text=True, check=False).stdout.strip()
    return {
        "revision": revision(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "versions": {
            "smtp-server-py": _version("smtp-server-py"),
            "anyio": _version("anyio"),
            "uvloop": _version("uvloop"),
            "trio": _version("trio"),
            "aiosmtpd": _version("aiosmtpd"),
            "node": node_version,
            "smtp-server": tools.smtp_server_version,
            "smtp-source": tools.smtp_source_version,
        },
    }


def revision() -> str:
    """The commit measured, and whether the packages differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "smtp_proto", "smtp_anyio", "smtp_sync")
    return commit + (" with uncommitted changes" if dirty else "")


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


# -- main ----------------------------------------------------------------------------------


@dataclass
class Plan:
    workloads: list[Workload]
    servers: list[Server]
    rounds: int
    out: Path
    profile: set[str] = field(default_factory=set)


def execute(plan: Plan, tools: Tools,
            progress: Callable[[str], None]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for wl in plan.workloads:
        for rnd in range(1, plan.rounds + 1):
            for server in plan.servers:
                profile = None
                if server.name in plan.profile and server.python:
                    profile = plan.out / "profiles" / f"{wl.key}-{server.name}-r{rnd}.txt"
                    profile.parent.mkdir(parents=True, exist_ok=True)
                record: dict[str, Any] = {"workload": wl.key, "server": server.name,
                                          "round": rnd}
                try:
                    record.update(measure(tools, wl, server, logs / f"{server.name}.log",
                                          profile))
                except Exception as exc:
                    record.update(value=None, problem=f"{type(exc).__name__}: {exc}")
                if profile is not None and profile.exists():
                    record["profile"] = str(profile)
                runs.append(record)
                progress(report.progress_line(wl, record))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a quarter of the messages, 2 rounds, shorter time bounds")
    parser.add_argument("--only", help="workloads, e.g. W2,W4")
    parser.add_argument("--servers", help="server names, comma-separated (see --list)")
    parser.add_argument("--list", action="store_true", help="list the servers and exit")
    parser.add_argument("--out", default=str(BENCH / "results"), help="results folder")
    parser.add_argument("--no-node", action="store_true", help="leave smtp-server out")
    parser.add_argument("--smtp-source", help="a smtp-source binary to use instead")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help="(re)write docs/server/performance.rst and its chart "
                             "(default: only after a complete, non-quick run)")
    parser.add_argument("--profile", default="",
                        help="servers to run under py-spy (raw profiles in <out>/profiles)")
    args = parser.parse_args()

    loadgen.raise_nofile()
    node, smtp_server_version = find_smtp_server(not args.no_node and not args.list)
    servers = all_servers(node)
    if args.list:
        for server in servers:
            print(f"{server.name:22} {server.kind:10} {' '.join(server.argv[1:])}")
        return
    wanted = [s for s in args.servers.split(",") if s] if args.servers else []
    unknown = set(wanted) - {s.name for s in servers}
    if unknown:
        sys.exit(f"unknown servers {sorted(unknown)}; --list shows them")
    chosen = [s for s in servers if not wanted or s.name in wanted]
    all_wl = workloads(args.quick)
    keys = [k.strip().upper() for k in args.only.split(",")] if args.only else []
    bad = set(keys) - {w.key for w in all_wl}
    if bad:
        sys.exit(f"unknown workloads {sorted(bad)}")
    chosen_wl = [w for w in all_wl if not keys or w.key in keys]
    rounds = args.rounds or (2 if args.quick else 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    smtp_source, smtp_source_version = find_smtp_source(args.smtp_source)
    tools = Tools(smtp_source, smtp_source_version, node, smtp_server_version)
    if any(w.tls for w in chosen_wl):
        make_certificate()
    info = machine(tools)
    info["load_start"] = loadavg()
    info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    info["core_build"] = smtp_proto.BUILD  # the "-pure" rows: SMTP_PROTO_PURE=1
    plan = Plan(chosen_wl, chosen, rounds, out,
                {s for s in args.profile.split(",") if s})
    print(f"# {len(chosen)} servers x {len(chosen_wl)} workloads x {rounds} rounds; "
          f"load average {info['load_start']}", file=sys.stderr)
    started = time.monotonic()
    try:
        runs = execute(plan, tools, lambda line: print(line, file=sys.stderr, flush=True))
    finally:  # interrupted: no sink outlives the run
        for sink in list(SinkProcess.live):
            sink.proc.kill()
            sink.stop()
    info["load_end"] = loadavg()
    info["duration_s"] = round(time.monotonic() - started)
    results = report.summarise(runs, chosen_wl, chosen, REFERENCE, CEILING)
    core_builds = None
    if smtp_proto.COMPILED and any(s.name.endswith("-pure") for s in chosen):
        # The core alone on both builds, for the page's compiled-core section.
        print("core micro-benchmark on both builds (core_bench.py --builds)", file=sys.stderr)
        subprocess.run([sys.executable, str(BENCH / "core_bench.py"), "--builds",
                        *(["--quick"] * args.quick), "--json", str(out / "core_builds.json")],
                       check=True, stdout=subprocess.DEVNULL, timeout=900)
        core_builds = json.loads((out / "core_builds.json").read_text())
    document = {
        "machine": info,
        "quick": args.quick,
        "rounds": rounds,
        "reference": REFERENCE,
        "ceiling": CEILING,
        "workloads": [{"key": w.key, "title": w.title, "unit": w.unit,
                       "higher_is_better": w.higher_is_better, "params": w.params,
                       "limit_s": w.limit, "client_procs": w.client_procs}
                      for w in chosen_wl],
        "servers": [{"name": s.name, "kind": s.kind} for s in chosen],
        "runs": runs,
        "summary": results,
        "core_builds": core_builds,
        "targets": report.targets(results, core_builds),
    }
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    chart = out / "bench-servers.png"
    report.chart(document, chart)
    text = report.markdown(document)
    print(text)
    (out / "results.md").write_text(text)
    for path in sorted(glob.glob(str(out / "profiles" / "*.txt"))):
        print(report.profile_summary(Path(path)))
    complete = (not args.quick and not keys and not wanted and node is not None)
    if args.docs or (args.docs is None and complete):
        report.write_docs(document, chart, ROOT)
        print("wrote docs/server/performance.rst and docs/_static/bench-servers.png",
              file=sys.stderr)
    print(f"results in {out}/ ({info['duration_s']} s; load average "
          f"{info['load_start']} -> {info['load_end']})", file=sys.stderr)


if __name__ == "__main__":
    main()
