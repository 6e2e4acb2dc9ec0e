"""Server TLS contexts from bun-smtp style options, SNI and hot reload.

Shared by both backends. ``key``/``cert`` accept PEM text (str or bytes) or
a file path; ``ca`` PEM text, a path, or a list of either. An
``ssl.SSLContext`` may be given instead (``tls_context``, or as a value of
``sni_options``).
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from smtp_proto import TLSInfo

from ._tls_profile import INTERMEDIATE_CIPHERS, INTERMEDIATE_GROUPS, set_groups

__all__ = ["TLSConfig", "TLSContexts", "tls_info"]

PEM = str | bytes | os.PathLike[str]
_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_SERVERNAME_ATTR = "_smtp_servername"
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")


def _is_pem(value: PEM) -> bool:
    if isinstance(value, bytes):
        return b"-----BEGIN" in value
    return isinstance(value, str) and "-----BEGIN" in value


def _pem_text(value: PEM) -> str:
    if _is_pem(value):
        return value.decode() if isinstance(value, bytes) else str(value)
    with open(value, encoding="ascii") as fh:
        return fh.read()


def _version(value: str | ssl.TLSVersion | None) -> ssl.TLSVersion | None:
    if value is None or isinstance(value, ssl.TLSVersion):
        return value
    try:
        return _VERSIONS[value]
    except KeyError:
        raise ValueError(f"unknown TLS version {value!r}; use one of {list(_VERSIONS)}") from None


@dataclass(frozen=True, kw_only=True)
class TLSConfig:
    """The TLS options of bun-smtp / smtp-server, validated."""

    key: PEM | None = None
    cert: PEM | None = None
    ca: PEM | Sequence[PEM] | None = None
    request_cert: bool = False
    reject_unauthorized: bool = True
    min_version: str | ssl.TLSVersion | None = None
    max_version: str | ssl.TLSVersion | None = None
    sni_options: Mapping[str, Mapping[str, object] | ssl.SSLContext] | None = None
    tls_context: ssl.SSLContext | None = None
    passphrase: str | None = field(default=None, repr=False)
    ciphers: str | None = None
    """OpenSSL cipher list for TLS 1.2 (Node's ``ciphers``); by default
    Mozilla's intermediate AEAD suites."""
    ecdh_curve: str | None = None
    """Key-exchange groups, colon-separated (Node's ``ecdhCurve``); by
    default X25519:P-256:P-384. ``"auto"``: OpenSSL's own list."""

    @property
    def configured(self) -> bool:
        return self.tls_context is not None or (self.key is not None and self.cert is not None)

    def replace(self, **changes: object) -> TLSConfig:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return TLSConfig(**values)

    def apply_profile(self, ctx: ssl.SSLContext) -> None:
        """Set ``ctx``'s TLS 1.2 suites and key-exchange groups from
        ``ciphers`` and ``ecdh_curve`` (Mozilla intermediate by default)."""
        try:
            ctx.set_ciphers(self.ciphers or INTERMEDIATE_CIPHERS)
        except ssl.SSLError:
            raise ValueError(f"no usable cipher in {self.ciphers!r}") from None
        groups = self.ecdh_curve or INTERMEDIATE_GROUPS
        if groups != "auto" and not set_groups(ctx, groups) and self.ecdh_curve:
            raise ValueError("ecdh_curve cannot be applied with this Python's ssl module")

    def build(self) -> ssl.SSLContext:
        """A fresh server context for these options (no SNI wiring)."""
        if self.tls_context is not None:
            return self.tls_context
        if self.key is None or self.cert is None:
            raise ValueError("TLS needs both key and cert (or tls_context)")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _load_chain(ctx, self.cert, self.key, self.passphrase)
        self.apply_profile(ctx)
        minimum = _version(self.min_version)
        maximum = _version(self.max_version)
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        if self.ca is not None:
            cas = [self.ca] if isinstance(self.ca, str | bytes | os.PathLike) else self.ca
            ctx.load_verify_locations(cadata="\n".join(_pem_text(c) for c in cas))
        if self.request_cert:
            # Python's ssl cannot accept a certificate that fails to verify,
            # so reject_unauthorized=False only makes the certificate optional.
            ctx.verify_mode = ssl.CERT_REQUIRED if self.reject_unauthorized else ssl.CERT_OPTIONAL
        return ctx


def _load_chain(ctx: ssl.SSLContext, cert: PEM, key: PEM, passphrase: str | None) -> None:
    if not _is_pem(cert) and not _is_pem(key):
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key), passphrase)
        return
    # ssl only loads key material from files: write PEM text to private
    # temporary files for the duration of the call.
    with tempfile.TemporaryDirectory(prefix="smtp-tls-") as tmp:
        paths = []
        for name, value in (("cert.pem", cert), ("key.pem", key)):
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(_pem_text(value))
            paths.append(path)
        ctx.load_cert_chain(paths[0], paths[1], passphrase)


class TLSContexts:
    """The live contexts of a server: the default one plus one per SNI name.

    :meth:`update` swaps them atomically: handshakes that start afterwards
    use the new certificates, established connections keep theirs.

    Listeners are given one stable *front* context (asyncio binds a context
    to a listening socket for good); its server-name callback, which OpenSSL
    calls on every ClientHello, with or without SNI, moves each handshake to
    the current default or per-name context.
    """

    def __init__(self, config: TLSConfig) -> None:
        self._config = config
        self._front: ssl.SSLContext | None = None
        self._default: ssl.SSLContext | None = None
        self._sni: dict[str, ssl.SSLContext] = {}
        if config.configured:
            self._rebuild(config)

    @property
    def config(self) -> TLSConfig:
        return self._config

    @property
    def available(self) -> bool:
        return self._front is not None

    @property
    def context(self) -> ssl.SSLContext:
        """The context to start every handshake with."""
        if self._front is None:
            raise RuntimeError("TLS is not configured (no key/cert or tls_context)")
        return self._front

    def update(self, **changes: object) -> None:
        """Apply new TLS options (``key=``, ``cert=``, ``sni_options=``, ...)."""
        if ("key" in changes or "cert" in changes) and "tls_context" not in changes:
            changes["tls_context"] = None  # new key material replaces a given context
        config = self._config.replace(**changes)
        self._rebuild(config)
        self._config = config

    def _rebuild(self, config: TLSConfig) -> None:
        default = config.build()
        sni: dict[str, ssl.SSLContext] = {}
        for name, options in (config.sni_options or {}).items():
            if isinstance(options, ssl.SSLContext):
                sni[name.lower().rstrip(".")] = options
            else:
                sni[name.lower().rstrip(".")] = config.replace(
                    sni_options=None, tls_context=None, **options
                ).build()
        self._default, self._sni = default, sni
        front = self._front
        if front is None:
            self._front = default
            if default is not config.tls_context or default.sni_callback is None:
                default.sni_callback = self._select
        elif front is not default:
            # A handshake starts on the front context and only its certificate
            # and CA store follow the switch in _select: the protocol limits
            # and the verify mode are the front's own, so carry them over.
            front.minimum_version = default.minimum_version
            front.maximum_version = default.maximum_version
            front.verify_mode = default.verify_mode
            if config.tls_context is None:
                config.apply_profile(front)  # suites and groups are the front's too

    def _select(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, servername: str | None,
        ctx: ssl.SSLContext,
    ) -> None:
        if servername is not None and not _HOST_NAME.fullmatch(servername):
            # Not a host name (RFC 6066 says a DNS name; OpenSSL passes on
            # anything, CR and LF included): the session never shows it, an
            # application could write it into a header.
            servername = None
        setattr(sslobj, _SERVERNAME_ATTR, servername)
        chosen = self._sni.get(servername.lower().rstrip(".")) if servername else None
        if chosen is None:
            chosen = self._default
        if chosen is not None and chosen is not sslobj.context:
            sslobj.context = chosen


def _standard_name(name: str | None) -> str | None:
    """Best-effort IANA name of an OpenSSL cipher name (Node's standardName)."""
    if not name or name.startswith("TLS_"):
        return name
    parts = name.split("-")
    if len(parts) < 3 or parts[0] not in ("ECDHE", "DHE"):
        return None
    kx, auth, rest = parts[0], parts[1], parts[2:]
    cipher = rest[0]
    if cipher.startswith("AES"):
        bits = cipher[3:]
        mode = rest[1] if len(rest) > 1 else "CBC"
        mac = rest[2] if len(rest) > 2 else "SHA"
        return f"TLS_{kx}_{auth}_WITH_AES_{bits}_{mode}_{mac}"
    if cipher == "CHACHA20":
        return f"TLS_{kx}_{auth}_WITH_CHACHA20_POLY1305_SHA256"
    return None


def tls_info(sslobj: ssl.SSLObject | ssl.SSLSocket) -> TLSInfo:
    """What ``on_secure`` and ``session.tls`` show of a finished handshake."""
    cipher = sslobj.cipher()
    name = cipher[0] if cipher else None
    peer = sslobj.getpeercert()
    return TLSInfo(
        version=sslobj.version(),
        cipher=name,
        standard_name=_standard_name(name),
        bits=cipher[2] if cipher else None,
        servername=getattr(sslobj, _SERVERNAME_ATTR, None),
        peer_certificate=peer or None,
        peer_certificate_der=sslobj.getpeercert(binary_form=True),
    )
