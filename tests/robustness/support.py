"""A server process to attack from outside (``serve.py``) and what the
tests read of it: its port, its memory, whether and when it exits."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.example_programs import TIMEOUT, Program
from tests.server.harness import available_backends

HERE = Path(__file__).resolve().parent
BACKENDS = available_backends()
ASYNC_BACKENDS = [b for b in BACKENDS if b != "sync"]


class ServerProcess(Program):
    """``serve.py BACKEND`` running; ``port`` once it listens."""

    def __init__(self, backend: str, *, options: dict[str, Any] | None = None,
                 handlers: str = "none", store: Path | None = None,
                 nofile: int | None = None, implicit_tls: bool = False) -> None:
        argv = [sys.executable, str(HERE / "serve.py"), backend,
                "--options", json.dumps(options or {}), "--handlers", handlers]
        if store is not None:
            argv += ["--store", str(store)]
        if nofile is not None:
            argv += ["--nofile", str(nofile)]
        if implicit_tls:
            argv.append("--implicit-tls")
        super().__init__(argv)
        self.backend = backend
        self.port = self.port_number()
        self.tls_port = (int(self.wait_for(r"^implicit TLS on 127\.0\.0\.1:(\d+)$").group(1))
                         if implicit_tls else None)

    def port_number(self) -> int:
        return int(self.wait_for(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))

    def rss(self) -> int:
        """Resident memory in bytes (``VmRSS``)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def open_descriptors(self) -> int:
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def exit_status(self) -> int:
        """As Program's; a server that does not end in time is asked for
        its threads' stacks (serve.py's SIGUSR1), shown in the failure."""
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)  # the dump, or the late exit
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            for pump in self._pumps:
                pump.join(TIMEOUT)
            pytest.fail(f"the server did not exit within {TIMEOUT} s:\n{self.stderr}")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
