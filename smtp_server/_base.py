"""What both servers share and that does no I/O: options, TLS contexts,
handler resolution, the connection registry's bookkeeping.

``smtp_anyio.SMTPServer`` and ``smtp_sync.SMTPServer`` both derive from
:class:`ServerBase`; they add listeners, connection drivers and the default
handler methods (coroutines in one, plain functions in the other).
"""

from __future__ import annotations

import inspect
import logging
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smtp_proto import ServerConfig

from ._limits import ClientLimits
from ._options import HANDLER_NAMES, BackendOptions, effective_config, parse_options
from ._tls import TLSContexts

__all__ = ["Handlers", "ServerBase", "new_session_id"]


def new_session_id() -> str:
    """16 random hex digits naming a session in logs and headers. Not a
    secret, so not from ``secrets``: that costs a system call per
    connection."""
    return f"{random.getrandbits(64):016x}"

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Handlers:
    """The effective handlers; ``None`` selects the built-in behaviour, which
    the drivers apply without calling anything (the fast path)."""

    connect: Handler | None = None
    secure: Handler | None = None
    auth: Handler | None = None
    mail_from: Handler | None = None
    rcpt_to: Handler | None = None
    data: Handler | None = None
    close: Handler | None = None
    data_is_async: bool = field(init=False)
    """``data`` is a coroutine function (asked once per message otherwise)."""

    def __post_init__(self) -> None:
        handler = self.data
        is_async = handler is not None and (
            inspect.iscoroutinefunction(handler)
            or inspect.iscoroutinefunction(type(handler).__call__)
        )
        object.__setattr__(self, "data_is_async", is_async)

    @classmethod
    def resolve(cls, server: object, base: type, given: Mapping[str, object]) -> Handlers:
        """A keyword handler wins, else a method that a subclass of ``base``
        overrides, else ``None``."""
        found: dict[str, Handler | None] = {}
        for name in HANDLER_NAMES:
            handler = given.get(name)
            # (A backend without default handler methods has neither.)
            overridden = getattr(type(server), name, None) is not getattr(base, name, None)
            if handler is None and overridden:
                handler = getattr(server, name)
            found[name.removeprefix("on_")] = handler  # type: ignore[assignment]
        return cls(**found)


class ServerBase:
    """Options, TLS and bookkeeping common to the async and threaded servers."""

    def __init__(self, base: type, options: Mapping[str, Any], logger_name: str) -> None:
        config, tls, backend, handlers = parse_options(options)
        self._config = config
        self.options: BackendOptions = backend
        self.tls = TLSContexts(tls)
        self.protocol_config: ServerConfig = effective_config(config, self.tls.available)
        self.logger = backend.logger or logging.getLogger(logger_name)
        self.handlers = Handlers.resolve(self, base, handlers)
        self.client_limits = ClientLimits(
            max_connections=backend.max_connections_per_client,
            max_auth_failures=backend.max_auth_failures_per_client,
            auth_failure_window=backend.auth_failure_window,
            exceptions=backend.client_limit_exceptions,
        )
        self.closing = False
        self.addresses: list[tuple[str, int]] = []
        self.unix_paths: list[str] = []
        """The Unix sockets listened on (``listen_unix()``); ``addresses``: TCP."""
        delay = backend.early_talker_delay
        if delay is None:
            delay = 0.1 if config.reject_early_talkers else 0.0
        self.early_talker_delay = delay

    def update_secure_context(self, **tls_options: Any) -> None:
        """Swap certificates (``key=``, ``cert=``, ``ca=``, ``sni_options=``...):
        new connections use them at once, open ones keep theirs."""
        self.tls.update(**tls_options)
        self.protocol_config = effective_config(self._config, self.tls.available)

    def reload_certificates(self) -> bool:
        """Read the certificate files again: ``key``, ``cert``, ``ca`` and
        those of ``sni_options``, from the paths the server was given (PEM
        text given inline and a ``tls_context`` stay what they are), and
        swap them in as :meth:`update_secure_context` does. What a worker
        process does on SIGHUP. Returns False when the server has no TLS;
        raises ``OSError``, ``ssl.SSLError`` or ``ValueError`` when the
        files do not load, and then the old certificates stay."""
        if not self.tls.config.configured:
            return False
        self.update_secure_context()
        return True

    def implicit_tls(self, secure: bool | None) -> bool:
        """Whether a listener does implicit TLS, checking it can."""
        implicit = self.options.secure if secure is None else secure
        if implicit and not self.tls.available:
            raise ValueError("an implicit-TLS listener needs key and cert (or tls_context)")
        return implicit

    def at_capacity(self, active: int) -> bool:
        """``active`` connections (this one included) exceed ``max_clients``."""
        limit = self.options.max_clients
        return limit is not None and active > limit

    def resolve_blocking(self, address: str) -> str | None:
        """Reverse DNS (or the custom ``resolver``) with blocking calls; the
        servers run it off their loop or thread and stop waiting after
        ``reverse_lookup_timeout``."""
        try:
            resolver = self.options.resolver
            if resolver is not None:
                result = resolver(address)
                return str(result) if result else None
            host, _ = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
            return host or None
        except (OSError, ValueError, UnicodeError):
            return None
        except Exception:  # a custom resolver must not kill the session
            self.logger.exception("resolver failed for %s", address)
            return None

    @property
    def listening(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.addresses)
