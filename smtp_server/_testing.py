"""What both servers' test helpers share: the record of a delivered message
and the thread-safe log of them.

``smtp_anyio.testing.MessageLog`` and ``smtp_sync.testing.MessageLog`` add
only the ``on_data`` handler itself (a coroutine function in one, a plain
function in the other); the bookkeeping, and the waiting, are here.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from smtp_proto import Envelope, Session, TLSInfo

from ._base import ServerBase

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = [
    "ControllerBase", "MessageLogBase", "ReceivedMessage", "ServerFixtureBase", "fixture_options",
]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message a server accepted, as a :class:`MessageLog` recorded it."""

    session_id: str
    """The session's id (as in the server's log lines)."""
    mail_from: str
    """The sender's address (``""`` for the null sender ``<>``)."""
    rcpt_to: tuple[str, ...]
    """The recipients' addresses, in the order the client gave them."""
    envelope: Envelope = field(repr=False)
    """The whole envelope: the parameters of MAIL FROM and of each RCPT TO
    (``envelope.mail_from.params``, ``envelope.smtputf8``...)."""
    data: bytes
    """The message as the client sent it after DATA (or in BDAT chunks):
    headers and body, CRLF line endings, dot-stuffing undone."""
    peer: tuple[str, int] | None
    """The client's ``(address, port)`` (after PROXY or XCLIENT, the client
    they name)."""
    helo: str | None
    """The name the client gave in HELO, EHLO or LHLO."""
    tls: TLSInfo | None
    """The TLS connection's details (``tls.version``, ``tls.servername``),
    or ``None`` for a plain-text session."""
    user: object
    """What ``on_auth`` accepted the client with; ``None`` if it did not
    log in."""

    @classmethod
    def from_session(cls, data: bytes, session: Session) -> ReceivedMessage:
        """The record of ``data``, received in ``session``'s current
        transaction."""
        envelope = session.envelope
        peer = None
        if session.remote_address is not None and session.remote_port is not None:
            peer = (session.remote_address, session.remote_port)
        return cls(
            session_id=session.id,
            mail_from=envelope.mail_from.address if envelope.mail_from else "",
            rcpt_to=tuple(rcpt.address for rcpt in envelope.rcpt_to),
            # A copy: the session's envelope is the application's to change.
            envelope=dataclasses.replace(envelope, rcpt_to=list(envelope.rcpt_to)),
            data=data,
            peer=peer,
            helo=session.host_name_appears_as,
            tls=session.tls,
            user=session.user,
        )

    def as_email(self) -> EmailMessage:
        """The message parsed by :mod:`email` (its modern policy), for its
        headers and parts: ``message.as_email()["Subject"]``."""
        import email  # noqa: PLC0415 - only where a test asks
        import email.policy  # noqa: PLC0415

        return email.message_from_bytes(self.data, policy=email.policy.default)


class MessageLogBase:
    """The messages received so far, in order, shared by the server's
    threads and the test's: :meth:`record` adds one, :meth:`wait_for`
    blocks until enough have arrived. The backends' ``MessageLog`` adds the
    ``on_data`` handler."""

    def __init__(self) -> None:
        self._messages: list[ReceivedMessage] = []
        self._changed = threading.Condition()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages received so far (the live list: it grows as messages
        arrive; take a copy to keep a moment's state)."""
        return self._messages

    def __len__(self) -> int:
        return len(self._messages)

    def record(self, data: bytes, session: Session) -> ReceivedMessage:
        """Add the message ``data`` of ``session``'s current transaction and
        wake whoever waits; for an ``on_data`` of your own that reads the
        message, decides, and records what it accepts."""
        message = ReceivedMessage.from_session(data, session)
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
        return message

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages have arrived, and return
        them all (a copy); :exc:`TimeoutError` after ``timeout`` seconds.

        A client that has its ``250`` for a message does not need it: the
        message is recorded before the server answers. It is for what a
        client sends in the background."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._messages)} of {count} messages arrived within "
                    f"{timeout:g} seconds: {[m.session_id for m in self._messages]}")
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._changed:
            self._messages.clear()


_S = TypeVar("_S", bound=ServerBase)


class ControllerBase(Generic[_S]):
    """What both servers' ``Controller`` share: the options or the server,
    the address, and when a server may start. Each backend adds how it
    runs (an event loop's thread, or the server's own threads)."""

    _server_type: type[_S]
    _label: str = ""

    def __init__(self, host: str, port: int, server: _S | None,
                 options: Mapping[str, Any]) -> None:
        if server is not None:
            if options:
                raise TypeError("give the server's options or server=, not both")
            if not isinstance(server, self._server_type):
                name = f"{self._server_type.__module__.split('.')[0]}.SMTPServer"
                raise TypeError(f"server= takes a {name}, not {type(server)!r}")
        self._host = host
        self._port = port
        self._options = dict(options)
        self._builds = server is None
        self._server: _S = self._server_type(**options) if server is None else server
        self._address: tuple[str, int] | None = None
        self._lock = threading.Lock()

    @property
    def server(self) -> _S:
        """The server of the current run (or of the last one, or the next)."""
        return self._server

    @property
    def running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        raise NotImplementedError

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on (or last listened on);
        :exc:`RuntimeError` before the first ``start()``."""
        if self._address is None:
            raise RuntimeError("the server has no address until start()")
        return self._address

    @property
    def host(self) -> str:
        """The host part of :attr:`address`."""
        return self.address[0]

    @property
    def port(self) -> int:
        """The port part of :attr:`address`: the bound port, also when
        ``port`` was 0."""
        return self.address[1]

    def _server_to_start(self) -> _S:
        """(Under the lock.) The server ``start()`` runs: a controller that
        builds its server from options builds a new one after a stop; one
        given ``server=`` cannot (a server serves once)."""
        if self.running:
            raise RuntimeError("the controller is running already")
        if self._server.closing:
            if not self._builds:
                raise RuntimeError("this server has been closed; a server serves once")
            self._server = self._server_type(**self._options)
        return self._server

    def start(self) -> tuple[str, int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = "{}:{}".format(*self._address) if self._address else "not started"
        state = "running" if self.running else "stopped"
        return f"<Controller {self._label} {where} {state}>"


class _Controller(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...


_C = TypeVar("_C", bound=_Controller)


class ServerFixtureBase(Generic[_C]):
    """What both pytest plugins' fixtures give a test: a running server (its
    backend's ``Controller``) and the messages it received."""

    def __init__(self, controller: _C, log: MessageLogBase) -> None:
        self.controller = controller
        """The ``Controller`` running the server."""
        self.log = log
        """The ``MessageLog`` the messages go to."""

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on."""
        return self.controller.address

    @property
    def host(self) -> str:
        """The host part of :attr:`address`."""
        return self.controller.address[0]

    @property
    def port(self) -> int:
        """The port part of :attr:`address`."""
        return self.controller.address[1]

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages received so far (the live list)."""
        return self.log.messages

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages have arrived and return
        them all; see ``MessageLog.wait_for``."""
        return self.log.wait_for(count, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.controller!r}, {len(self.log)} messages>"


class _Marker(Protocol):
    @property
    def args(self) -> tuple[object, ...]: ...

    @property
    def kwargs(self) -> Mapping[str, object]: ...


def fixture_options(
    name: str, defaults: Mapping[str, object], configured: Mapping[str, object],
    markers: Iterable[_Marker],
) -> dict[str, object]:
    """The options of a test's server fixture ``name``: ``defaults``, then
    the options fixture's ``configured`` dict, then the ``@pytest.mark.<name>``
    markers from the farthest (a module's ``pytestmark``) to the closest
    (the test's own; pytest's ``iter_markers`` gives the closest first),
    each overriding the ones before."""
    options = {**defaults, **configured}
    for marker in reversed(list(markers)):
        if marker.args:
            raise TypeError(f"@pytest.mark.{name} takes the server's options as keyword "
                            f"arguments, not {marker.args!r}")
        options.update(marker.kwargs)
    return options
