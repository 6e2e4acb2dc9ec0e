"""``ServerOptions``: every keyword ``SMTPServer(...)`` takes, typed.

Both servers declare ``**options: Unpack[ServerOptions]``, so a type
checker completes the names and catches a typo or a wrong type in user
code (``SMTPServer(sze=1000)``, ``socket_timeout="60"``); at run time an
unknown name is still a ``TypeError``. The keys are the fields of
:class:`smtp_proto.ServerConfig`, :class:`TLSConfig` and
:class:`BackendOptions` plus the handler names; a test keeps them equal.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal, TypedDict

from ._tls import PEM

__all__ = ["Handler", "ServerOptions"]

Handler = Callable[..., object]
"""A handler: a plain function, or (``smtp_anyio``) a coroutine function."""


class ServerOptions(TypedDict, total=False):
    """The options of ``smtp_anyio.SMTPServer`` and ``smtp_sync.SMTPServer``
    (see the configuration reference for each one's meaning and default)."""

    # -- the protocol (smtp_proto.ServerConfig) --
    name: str
    banner: str
    helo_response: str
    lmtp: bool
    auth_methods: Sequence[str]
    auth_optional: bool
    allow_insecure_auth: bool
    auth_required_message: str | None
    cram_md5_challenge: Callable[[], str] | None
    max_auth_failures: int | None
    hide_starttls: bool
    hide_pipelining: bool
    hide_enhancedstatuscodes: bool
    hide_8bitmime: bool
    hide_smtputf8: bool
    hide_size: bool
    hide_dsn: bool
    hide_requiretls: bool
    hide_chunking: bool
    disabled_commands: Collection[str]
    needs_upgrade: bool
    size: int | None
    max_recipients: int | None
    max_command_length: int
    max_allowed_unauthenticated_commands: int | None
    max_invalid_commands: int | None
    use_xclient: bool
    use_xforward: bool
    use_proxy: bool | Sequence[str]
    reject_early_talkers: bool
    bare_line_endings: Literal["keep", "reject"]
    forbid_unauth_pipelining: bool
    # -- TLS (TLSConfig) --
    key: PEM | None
    cert: PEM | None
    ca: PEM | Sequence[PEM] | None
    request_cert: bool
    reject_unauthorized: bool
    min_version: str | ssl.TLSVersion | None
    max_version: str | ssl.TLSVersion | None
    sni_options: Mapping[str, Mapping[str, object] | ssl.SSLContext] | None
    tls_context: ssl.SSLContext | None
    passphrase: str | None
    ciphers: str | None
    ecdh_curve: str | None
    # -- sockets, time and limits (BackendOptions) --
    secure: bool
    max_clients: int | None
    socket_timeout: float
    close_timeout: float
    disable_reverse_lookup: bool
    resolver: Callable[[str], object] | None
    reverse_lookup_timeout: float
    early_talker_delay: float | None
    logger: logging.Logger | None
    max_connections_per_client: int | None
    client_limit_exceptions: Sequence[str]
    command_timeout: float | None
    min_data_rate: float
    auth_failure_delay: float
    max_auth_failures_per_client: int | None
    auth_failure_window: float
    # -- handlers --
    on_connect: Handler | None
    on_secure: Handler | None
    on_auth: Handler | None
    on_mail_from: Handler | None
    on_rcpt_to: Handler | None
    on_data: Handler | None
    on_close: Handler | None
