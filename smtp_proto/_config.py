"""``ServerConfig``: every option that shapes the protocol, validated once.

One config object is shared by all connections of a server. Option names are
the snake_case of bun-smtp / smtp-server's so that ported code finds them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AUTH_MECHANISMS", "ServerConfig"]

AUTH_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")
"""SASL mechanisms the core implements."""

_COMMANDS = frozenset(
    {
        "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
        "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD",
    }
)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _one_line(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must be a single line")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Protocol options. Immutable; build a new one to change anything.

    Limits that are ``None`` are off. See the configuration reference in the
    docs for the reply each option produces.
    """

    name: str = "localhost"
    """Server name in the greeting and the first EHLO line (backends default it
    to the host's FQDN; the core reads no system state)."""
    banner: str = ""
    """Text appended to the 220 greeting."""
    helo_response: str = "%s Nice to meet you, %s"
    """First line of the HELO/EHLO reply; ``%s`` become the server name, then
    the client's host name."""
    lmtp: bool = False
    """Speak LMTP (RFC 2033): LHLO only, one reply per recipient after the body."""

    auth_methods: Sequence[str] = ("PLAIN", "LOGIN")
    """Advertised SASL mechanisms, from :data:`AUTH_MECHANISMS`."""
    auth_optional: bool = False
    """Allow mail transactions without AUTH (else 530 until authenticated)."""
    allow_insecure_auth: bool = False
    """Allow AUTH before TLS (else 538 5.7.11)."""
    auth_required_message: str | None = None
    """Text of the 530 sent while authentication is required."""
    cram_md5_challenge: Callable[[], str] | None = None
    """Returns a fresh CRAM-MD5 challenge such as ``<random.time@host>``. The
    core draws no randomness, so CRAM-MD5 needs this."""
    max_auth_failures: int | None = 5
    """Rejected AUTH attempts allowed; the next failure gets 421 and the
    connection closes."""

    hide_starttls: bool = False
    """Leave STARTTLS out of EHLO (the command still works unless disabled)."""
    hide_pipelining: bool = False
    """Leave PIPELINING out of EHLO (pipelined input is still answered in order)."""
    hide_enhancedstatuscodes: bool = False
    """Leave ENHANCEDSTATUSCODES out of EHLO and every RFC 3463 code out of replies."""
    hide_8bitmime: bool = False
    """Leave out 8BITMIME (and with it SMTPUTF8, which RFC 6531 ties to it);
    ``BODY=8BITMIME`` is then refused with 555."""
    hide_smtputf8: bool = False
    """Leave out SMTPUTF8: non-ASCII addresses get 553 5.6.7."""
    hide_size: bool = False
    """Advertise ``SIZE`` without its number; the limit is still enforced."""
    hide_dsn: bool = True
    """DSN (RFC 3461) is opt-in: advertising it promises delivery status
    notifications downstream. Hidden, RET/ENVID/NOTIFY/ORCPT get 555."""
    hide_requiretls: bool = True
    """REQUIRETLS (RFC 8689) is opt-in and only ever offered over TLS."""
    hide_chunking: bool = False
    """Leave out CHUNKING and BINARYMIME (and refuse BDAT as not implemented)."""
    disabled_commands: Collection[str] = frozenset()
    """Commands answered ``502 5.5.1`` (e.g. ``{"AUTH", "STARTTLS"}``)."""
    needs_upgrade: bool = False
    """Refuse MAIL and AUTH with 530 5.7.0 until STARTTLS has succeeded."""

    size: int | None = None
    """Maximum message size in bytes: advertised, checked on MAIL SIZE=,
    counted during the transfer (552 at the end)."""
    max_recipients: int | None = 1000
    """Recipients per transaction; more get 452 4.5.3 (past 100 of those in
    a transaction, each also counts towards ``max_invalid_commands``)."""
    max_command_length: int = 512
    """Longest command line, CRLF included (RFC 5321 section 4.5.3.1.4). MAIL
    and RCPT get the extra room their extensions define, AUTH and SASL
    responses 12288 octets (RFC 4954). Longer lines get 500 5.5.2."""
    max_allowed_unauthenticated_commands: int | None = 10
    """Commands allowed before AUTH while authentication is required."""
    max_invalid_commands: int | None = 10
    """Client errors tolerated: every 500, 501, 502, 503, 504 or 555 the core
    sends counts (and excess RCPTs, see ``max_recipients``), and an accepted
    message resets the count (as smtp-server).
    The error after the limit is answered 421 and the connection closes."""

    use_xclient: bool = False
    """Trust Postfix XCLIENT (the client is a proxy speaking for another)."""
    use_xforward: bool = False
    """Trust Postfix XFORWARD (original-client attributes for logging)."""
    use_proxy: bool | Sequence[str] = False
    """Expect a PROXY protocol header: ``True`` from every peer, or a tuple of
    trusted peer addresses / networks (others are served directly)."""
    reject_early_talkers: bool = False
    """Answer 421 instead of the greeting to a client that spoke first."""
    bare_line_endings: Literal["keep", "reject"] = "keep"
    """Bare CR or LF inside DATA: kept as message bytes, or the message is
    refused with 554 5.6.0. Either way only CRLF.CRLF ends a message."""
    forbid_unauth_pipelining: bool = False
    """A client that is not authenticated and sends more behind DATA
    without waiting for the 354 (RFC 2920 section 3.1: DATA ends a group) is
    answered ``554 5.5.0 Error: SMTP protocol synchronization`` and
    disconnected, as Postfix's ``smtpd_forbid_unauth_pipelining`` does. It
    judges what has arrived by then, so it depends on how the input is
    split: that timing is what it exists to detect."""

    # Derived once from the options above (read on every command).
    enhanced_status_codes: bool = field(default=True, init=False, repr=False)
    """Replies carry RFC 3463 codes (``not hide_enhancedstatuscodes``)."""
    smtputf8: bool = field(default=True, init=False, repr=False)
    """SMTPUTF8 is offered; RFC 6531 section 3.1 makes it depend on 8BITMIME."""
    auth_enabled: bool = field(default=True, init=False, repr=False)
    """AUTH is offered: some mechanism configured and the command enabled."""
    auth_required: bool = field(default=True, init=False, repr=False)
    """Mail needs AUTH first (``auth_enabled and not auth_optional``)."""
    chunking: bool = field(default=True, init=False, repr=False)
    """CHUNKING/BDAT is offered."""
    _proxy_networks: tuple[_Network, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _one_line("name", self.name)
        if not self.name or " " in self.name:
            raise ValueError("name must be a non-empty word")
        _one_line("banner", self.banner)
        _one_line("helo_response", self.helo_response)
        if self.auth_required_message is not None:
            _one_line("auth_required_message", self.auth_required_message)
        methods = tuple(m.upper() for m in self.auth_methods)
        for method in methods:
            if method not in AUTH_MECHANISMS:
                raise ValueError(f"unknown auth method {method!r}")
        if "CRAM-MD5" in methods and self.cram_md5_challenge is None:
            raise ValueError("CRAM-MD5 needs a cram_md5_challenge factory")
        set_(self, "auth_methods", methods)
        disabled = frozenset(c.upper() for c in self.disabled_commands)
        unknown = disabled - _COMMANDS
        if unknown:
            raise ValueError(f"unknown commands in disabled_commands: {sorted(unknown)}")
        set_(self, "disabled_commands", disabled)
        for opt in ("size", "max_recipients", "max_auth_failures",
                    "max_allowed_unauthenticated_commands", "max_invalid_commands"):
            value = getattr(self, opt)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ValueError(f"{opt} must be a non-negative integer or None")
        if self.size == 0:
            set_(self, "size", None)
        if self.max_command_length < 64:
            raise ValueError("max_command_length must be at least 64")
        if self.bare_line_endings not in ("keep", "reject"):
            raise ValueError("bare_line_endings must be 'keep' or 'reject'")
        set_(self, "enhanced_status_codes", not self.hide_enhancedstatuscodes)
        set_(self, "smtputf8", not self.hide_smtputf8 and not self.hide_8bitmime)
        set_(self, "auth_enabled", bool(methods) and "AUTH" not in disabled)
        set_(self, "auth_required", self.auth_enabled and not self.auth_optional)
        set_(self, "chunking", not self.hide_chunking and "BDAT" not in disabled)
        if not isinstance(self.use_proxy, bool):
            networks = tuple(ipaddress.ip_network(a, strict=False) for a in self.use_proxy)
            set_(self, "use_proxy", tuple(str(a) for a in self.use_proxy))
            set_(self, "_proxy_networks", networks)

    # -- derived views -------------------------------------------------------

    def expects_proxy(self, remote_address: str | None) -> bool:
        """Should a connection from ``remote_address`` start with a PROXY header?"""
        if self.use_proxy is True:
            return True
        if not self._proxy_networks or remote_address is None:
            return False
        try:
            ip = ipaddress.ip_address(remote_address.removeprefix("::ffff:"))
        except ValueError:
            return False
        return any(ip in net for net in self._proxy_networks)

    @classmethod
    def from_options(cls, options: Iterable[tuple[str, object]]) -> ServerConfig:
        """Build from (name, value) pairs, ignoring names that are not protocol
        options; backends use it to split their keyword arguments."""
        known = {name for name, f in cls.__dataclass_fields__.items() if f.init}
        return cls(**{k: v for k, v in options if k in known})  # type: ignore[arg-type]
