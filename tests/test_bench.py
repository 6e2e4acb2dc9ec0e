"""The benchmark's parts, kept from rotting: no timings here (speed is
measured by ``bench/run.py``, never by tests), only that every sink speaks
the protocol ``run.py`` relies on, that the load generators count right, and
that the report evaluates targets the way the issue states them.

Each sink runs as a subprocess on a free port; readiness is its READY line,
never a sleep.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trustme

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SINKS = BENCH / "servers"
TIMEOUT = 30

sys.path.insert(0, str(BENCH))
import report  # noqa: E402


class Sink:
    """A sink subprocess: its port once READY, its STATS once stopped."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SINKS / script), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the sink's first line, or EOF if it died
        if not line.startswith("READY"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"{script} did not get ready: {line!r} {err[-2000:]}")
        fields = dict(part.split("=") for part in line.split()[1:])
        self.port = int(fields["port"])

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=TIMEOUT)
        stats = [line for line in out.splitlines() if line.startswith("STATS")]
        assert stats, f"no STATS line: {out!r} {err[-2000:]}"
        return {k: int(v) for k, v in (p.split("=") for p in stats[0].split()[1:])}


PYTHON_SINKS = [
    pytest.param("anyio_sink.py", ["--backend", "asyncio"], id="smtp_anyio-asyncio"),
    pytest.param("anyio_sink.py", ["--backend", "uvloop"], id="smtp_anyio-uvloop"),
    pytest.param("anyio_sink.py", ["--backend", "trio"], id="smtp_anyio-trio"),
    pytest.param("sync_sink.py", [], id="smtp_sync"),
    pytest.param("raw_sink.py", ["--backend", "asyncio"], id="ceiling-asyncio"),
    pytest.param("aiosmtpd_sink.py", ["--backend", "asyncio"], id="aiosmtpd-asyncio",
                 marks=pytest.mark.skipif(importlib.util.find_spec("aiosmtpd") is None,
                                          reason="aiosmtpd is a bench extra")),
]


@pytest.mark.parametrize(("script", "args"), PYTHON_SINKS)
def test_a_sink_counts_what_it_reads(script: str, args: list[str]) -> None:
    sink = Sink(script, *args)
    body = b"Subject: bench\r\n\r\n" + b"line\r\n" * 100
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as client:
            for _ in range(3):
                client.sendmail("a@bench.localhost", ["b@bench.localhost"], body)
    finally:
        stats = sink.stop()
    assert stats["messages"] == 3
    assert stats["bytes"] >= 3 * len(body)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("bench-tls")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    yield folder / "cert.pem", folder / "key.pem"


def _loadgen(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), *args],
                          capture_output=True, text=True, timeout=2 * TIMEOUT, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("script", ["anyio_sink.py", "sync_sink.py"])
def test_w6_load_generator_completes_tls_handshakes(
    script: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    sink = Sink(script, "--tls-cert", str(cert), "--tls-key", str(key), "--secure")
    try:
        result = _loadgen("tls", "--port", str(sink.port), "--procs", "1",
                          "--concurrency", "4", "--count", "20", "--seconds", "20")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", sink.port, context=context,
                              timeout=TIMEOUT) as client:
            assert client.noop()[0] == 250
    finally:
        sink.stop()
    assert (result["done"], result["errors"]) == (20, 0)


def test_w7_load_generator_pipelines_every_message() -> None:
    sink = Sink("anyio_sink.py", "--backend", "asyncio")
    try:
        result = _loadgen("pipeline", "--port", str(sink.port), "--procs", "1",
                          "--sessions", "3", "--messages", "30", "--length", "1024",
                          "--seconds", "20")
    finally:
        stats = sink.stop()
    assert (result["done"], result["errors"]) == (30, 0)
    assert stats["messages"] == 30


def _summary(values: dict[tuple[str, str], float]) -> dict[str, dict[str, Any]]:
    workloads = sorted({wl for wl, _ in values})
    servers = sorted({name for _, name in values})
    runs = [{"workload": wl, "server": name, "round": 1, "value": value}
            for (wl, name), value in values.items()]
    summary: dict[str, dict[str, Any]] = report.summarise(
        runs, [SimpleNamespace(key=wl) for wl in workloads],
        [SimpleNamespace(name=name, kind="ours") for name in servers],
        "smtp_anyio-uvloop", "ceiling-uvloop")
    return summary


def test_targets_compare_against_the_faster_aiosmtpd() -> None:
    summary = _summary({
        ("W2", "smtp_anyio-uvloop"): 9000.0, ("W2", "smtp-server"): 10000.0,
        ("W2", "aiosmtpd-asyncio"): 2000.0, ("W2", "aiosmtpd-uvloop"): 3100.0,
        ("W2", "smtp_anyio-trio"): 6200.0, ("W2", "smtp_sync"): 8000.0,
        ("W5", "smtp_anyio-uvloop"): 7.5, ("W5", "smtp_anyio-asyncio"): 8.5,
    })
    verdicts = {t["target"]: t["met"] for t in report.targets(summary)}
    assert verdicts["W2: smtp_anyio-uvloop >= 1.25x smtp-server"] is False
    assert verdicts["W2: smtp_anyio-uvloop >= 4x aiosmtpd-uvloop"] is False  # 2.9x
    assert verdicts["W2: smtp_anyio-trio >= 2.5x aiosmtpd-uvloop"] is False  # 2.0x
    assert verdicts["W2: smtp_sync >= 2.5x aiosmtpd-uvloop"] is True  # 2.58x
    assert verdicts["W5: smtp_anyio-uvloop <= 8 KiB per idle connection"] is True
    assert verdicts["W5: smtp_anyio-asyncio <= 8 KiB per idle connection"] is False
    # Not measured in this run: neither met nor missed.
    assert verdicts["W4: smtp_anyio-uvloop >= 1.2x smtp-server"] is None


def test_the_compiled_core_is_reported_against_its_pure_rows() -> None:
    summary = _summary({
        ("W2", "smtp_anyio-uvloop"): 12000.0, ("W2", "smtp_anyio-uvloop-pure"): 10000.0,
        ("W2", "smtp_sync"): 5000.0,  # no pure row for it in this run: left out
    })
    doc = {"summary": summary,
           "workloads": [{"key": "W2", "unit": "msg/s", "higher_is_better": True}]}
    assert report.build_rows(doc) == [["W2", "smtp_anyio-uvloop", "10,000", "12,000", "1.20x"]]
    core = {"messages_ratio": 1.6, "rows": [
        {"name": "messages, W2 shape", "reads": "1 command", "compiled": 64000.0,
         "pure": 40000.0},
        {"name": "baseline: bytes.find", "reads": "64 KiB", "compiled": 2000.0, "pure": 2000.0},
    ]}
    assert report.core_build_rows({"core_builds": core}) == [
        ["messages, W2 shape", "1 command", "40,000", "64,000", "1.60x"]]
    verdicts = {t["target"]: t["met"] for t in report.targets(summary, core)}
    assert verdicts["core micro-benchmark: messages >= 2x faster compiled than pure Python"] \
        is False
