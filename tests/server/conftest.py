"""Fixtures of the server conformance suite: one test body, every backend."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from .harness import Received, RunningServer, available_backends, run_server


@pytest.fixture(params=available_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_server(backend: str) -> Iterator[Callable[..., RunningServer]]:
    """``start_server(listeners=None, **options)`` -> a running server, stopped
    at the end of the test."""
    stack = contextlib.ExitStack()

    def start(listeners: dict[str, dict[str, Any]] | None = None, **options: Any) -> RunningServer:
        return stack.enter_context(run_server(backend, listeners, **options))

    with stack:
        yield start


class Inbox:
    """A thread-safe ``on_data`` that stores every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()

    def on_data(self, stream: Any, session: Any) -> None:
        body = stream.read()
        envelope = session.envelope
        entry = Received(
            sender=envelope.mail_from.address if envelope.mail_from else "",
            recipients=[r.address for r in envelope.rcpt_to],
            body=body,
            session_id=session.id,
        )
        with self._cond:
            self.messages.append(entry)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` messages arrived (an event, not a sleep)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"{len(self.messages)} of {count} messages arrived")
            return list(self.messages)


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


class TLSMaterial:
    """A trustme CA, a server certificate for localhost, and client contexts."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.key_pem = self.cert.private_key_pem.bytes()
        self.cert_pem = b"".join(blob.bytes() for blob in self.cert.cert_chain_pems)

    @property
    def server_options(self) -> dict[str, Any]:
        return {"key": self.key_pem, "cert": self.cert_pem}

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture(scope="session")
def tls() -> TLSMaterial:
    return TLSMaterial()


@pytest.fixture(params=[b for b in available_backends() if b != "sync"])
def async_backend(request: pytest.FixtureRequest) -> str:
    """The anyio backends only, for behaviour specific to coroutine handlers."""
    return str(request.param)


@pytest.fixture
def start_async_server(async_backend: str) -> Iterator[Callable[..., RunningServer]]:
    """Like ``start_server``, on the anyio backends only."""
    stack = contextlib.ExitStack()

    def start(listeners: dict[str, dict[str, Any]] | None = None, **options: Any) -> RunningServer:
        return stack.enter_context(run_server(async_backend, listeners, **options))

    with stack:
        yield start
