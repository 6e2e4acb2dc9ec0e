"""Server options: one list for both backends, split into the protocol part
(``smtp_proto.ServerConfig``), TLS (``TLSConfig``) and the backend's own."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

from smtp_proto import ServerConfig

from ._tls import TLSConfig

__all__ = ["HANDLER_NAMES", "BackendOptions", "effective_config", "parse_options"]

HANDLER_NAMES = (
    "on_connect", "on_secure", "on_auth", "on_mail_from", "on_rcpt_to", "on_data", "on_close",
)

Resolver = Callable[[str], object]


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """Options that are about sockets, time and TLS rather than the protocol."""

    secure: bool = False
    """Implicit TLS from the first byte (port 465 style)."""
    max_clients: int | None = None
    socket_timeout: float = 60.0
    close_timeout: float = 30.0
    disable_reverse_lookup: bool = False
    resolver: Resolver | None = None
    """``resolver(ip) -> hostname | None`` (sync or async) instead of DNS."""
    reverse_lookup_timeout: float = 1.5
    early_talker_delay: float | None = None
    """Seconds to wait for an early talker before greeting; by default 0.1
    when ``reject_early_talkers`` is set, else 0."""
    logger: logging.Logger | None = None
    max_connections_per_client: int | None = 50
    """Open connections one client address may have (after PROXY/XCLIENT);
    more are answered 421 4.7.0. Postfix's anvil default."""
    client_limit_exceptions: Sequence[str] = ("127.0.0.0/8", "::1/128")
    """Networks to which the per-client limits and the AUTH failure delay
    do not apply (Postfix exempts ``$mynetworks``, loopback included)."""
    command_timeout: float | None = 60.0
    """Seconds a whole command line may take to arrive, from its first byte
    (``socket_timeout`` only bounds the gaps); a message body gets this
    plus one second per ``min_data_rate`` bytes. None: no such deadline."""
    min_data_rate: float = 1024.0
    """Bytes per second a message body earns as extra time (see above)."""
    auth_failure_delay: float = 1.0
    """Seconds before the reply to a failed AUTH, doubling with each failure
    of the session (at most 10 s); other sessions are not held up."""
    max_auth_failures_per_client: int | None = 30
    """Failed AUTHs one client address may make in ``auth_failure_window``
    seconds, across connections; after that its AUTH gets 421 4.7.0."""
    auth_failure_window: float = 600.0

    def __post_init__(self) -> None:
        for name in ("socket_timeout", "close_timeout", "reverse_lookup_timeout",
                     "min_data_rate", "auth_failure_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.command_timeout is not None and self.command_timeout <= 0:
            raise ValueError("command_timeout must be positive (or None)")
        if self.auth_failure_delay < 0:
            raise ValueError("auth_failure_delay must not be negative")
        for name in ("max_clients", "max_connections_per_client",
                     "max_auth_failures_per_client"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None)")
        if isinstance(self.client_limit_exceptions, str):
            raise TypeError("client_limit_exceptions is a list of networks, not one string")
        for network in self.client_limit_exceptions:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"client_limit_exceptions: {exc}") from None


_BACKEND = {f.name for f in fields(BackendOptions)}
_TLS = {f.name for f in fields(TLSConfig)}
_PROTOCOL = {f.name for f in fields(ServerConfig) if f.init}


def _cram_md5_factory(name: str) -> Callable[[], str]:
    def challenge() -> str:
        return f"<{secrets.randbelow(10**12)}.{int(time.time())}@{name}>"

    return challenge


def parse_options(
    options: Mapping[str, object],
) -> tuple[ServerConfig, TLSConfig, BackendOptions, dict[str, object]]:
    """Split keyword options; returns (protocol, tls, backend, handlers).

    Unknown names raise ``TypeError`` so that a typo never passes silently.
    """
    unknown = set(options) - _BACKEND - _TLS - _PROTOCOL - set(HANDLER_NAMES)
    if unknown:
        raise TypeError(f"unknown SMTPServer options: {', '.join(sorted(unknown))}")
    protocol = {k: v for k, v in options.items() if k in _PROTOCOL}
    name = protocol.setdefault("name", socket.getfqdn() or "localhost")
    if "CRAM-MD5" in [str(m).upper() for m in protocol.get("auth_methods", ())]:  # type: ignore[attr-defined]
        protocol.setdefault("cram_md5_challenge", _cram_md5_factory(str(name)))
    tls = TLSConfig(**{k: v for k, v in options.items() if k in _TLS})  # type: ignore[arg-type]
    backend = BackendOptions(**{k: v for k, v in options.items() if k in _BACKEND})  # type: ignore[arg-type]
    if backend.secure and not tls.configured:
        raise ValueError("secure=True needs key and cert (or tls_context)")
    config = ServerConfig(**protocol)  # type: ignore[arg-type]
    handlers = {k: v for k, v in options.items() if k in HANDLER_NAMES}
    for key, handler in handlers.items():
        if handler is not None and not callable(handler):
            raise TypeError(f"{key} must be callable")
    return config, tls, backend, handlers


def effective_config(config: ServerConfig, tls_available: bool) -> ServerConfig:
    """Without a certificate STARTTLS cannot work: it is answered 502 and not
    advertised, rather than promising a handshake that would fail."""
    if tls_available or "STARTTLS" in config.disabled_commands:
        return config
    return replace(config, disabled_commands=frozenset(config.disabled_commands) | {"STARTTLS"})
