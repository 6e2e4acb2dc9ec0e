"""The fuzz input: the data provider and the input format.

:class:`PurePythonFDP` reads an input exactly as ``atheris.FuzzedDataProvider``
does (the :class:`Provider` methods only). :func:`read_setup` turns the config
bytes into a :class:`Setup`, :func:`parse_script` the conversation bytes into
steps, and :func:`encode_input` builds an input from readable parts (the
inverse). The tables here (:data:`TEXTS`, ...) are what the decision bytes
index into. See README.md in this folder for the format.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from smtp_proto import AUTH_MECHANISMS, ServerConfig, ServerConnection, TLSInfo

__all__ = [
    "CHALLENGES",
    "CONFIG_FIELDS",
    "ENHANCED_TAILS",
    "MARK",
    "MARKERS",
    "SHUTDOWN_CODES",
    "TEXTS",
    "USERS",
    "Provider",
    "PurePythonFDP",
    "Setup",
    "encode_input",
    "parse_script",
    "read_setup",
]

# -- the data provider -----------------------------------------------------------


class Provider(Protocol):
    """The subset of ``atheris.FuzzedDataProvider`` the harness uses."""

    def ConsumeIntInRange(self, lo: int, hi: int, /) -> int: ...
    def ConsumeBytes(self, count: int, /) -> bytes: ...
    def remaining_bytes(self) -> int: ...


class PurePythonFDP:
    """Byte-exact stand-in for ``atheris.FuzzedDataProvider`` (the methods
    of :class:`Provider` only).

    As in atheris (and LLVM's C++ provider), ``ConsumeBytes`` takes bytes
    from the front, ``ConsumeIntInRange`` from the back: big-endian from the
    last byte, as many bytes as the range has bit-octets, modulo the range.
    An exhausted provider returns ``b""`` and ``lo``.
    """

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._start = 0
        self._end = len(self._data)

    def remaining_bytes(self) -> int:
        return self._end - self._start

    def ConsumeBytes(self, count: int) -> bytes:
        n = max(0, min(count, self._end - self._start))
        out = self._data[self._start : self._start + n]
        self._start += n
        return out

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:
        delta = hi - lo
        if delta < 0 or delta >= 1 << 56:
            raise ValueError("range not supported")
        result = offset = 0
        size = delta.bit_length()
        while offset < size and delta >> offset and self._end > self._start:
            self._end -= 1
            result = (result << 8) | self._data[self._end]
            offset += 8
        return lo + result % (delta + 1)


# -- the input format ------------------------------------------------------------

_MECH_SETS = tuple(
    tuple(m for i, m in enumerate(AUTH_MECHANISMS) if not mask >> i & 1) for mask in range(16)
)
_TEXT_SETS = (
    # name, banner, helo_response, auth_required_message
    ("localhost", "", "%s Nice to meet you, %s", None),
    ("mx.example.com", "ready for \u00fcn\u00efcode", "%s greets %s", "Authenticate first"),
    ("a", "", "%s", None),
    ("x" * 60, "b" * 300, "%s %s %s extra", "y" * 200),
)

CONFIG_FIELDS: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("lmtp", (False, True)),
    ("auth_optional", (True, False)),
    ("allow_insecure_auth", (True, False)),
    ("auth_methods", _MECH_SETS),  # index = bitmask of AUTH_MECHANISMS left out
    ("size", (None, 100, 10, 1000, 0, 1)),
    ("bare_line_endings", ("keep", "reject")),
    ("use_proxy", (False, True, ("127.0.0.1",), ("10.0.0.0/8", "::1"))),
    ("remote_address", (None, "127.0.0.1", "192.0.2.1", "::1", "10.1.2.3")),
    ("xclient_xforward", tuple(range(4))),  # bit 0 use_xclient, bit 1 use_xforward
    ("hide_flags", tuple(range(256))),  # bits: see _HIDE_BITS
    ("dsn_flags", tuple(range(4))),  # bit 0 hide_dsn, bit 1 hide_requiretls
    ("max_command_length", (512, 64, 100, 1000, 4096)),
    ("max_recipients", (1000, 1, 2, None)),
    ("max_invalid_commands", (10, None, 0, 1, 3)),
    ("max_auth_failures", (5, None, 0, 1)),
    ("max_allowed_unauthenticated_commands", (10, None, 0, 2)),
    ("disabled_commands", (
        (), ("AUTH",), ("STARTTLS",), ("BDAT",), ("VRFY", "EXPN", "HELP"), ("MAIL",),
        ("XCLIENT", "XFORWARD"), ("DATA", "RSET"),
    )),
    ("texts", tuple(range(len(_TEXT_SETS)))),
    ("reject_early_talkers", (False, True)),
    ("implicit_tls", (False, True)),
    ("expect_proxy", (None, True, False)),
    ("greeting", ("immediate", "late", "marker")),
    ("eof_at_end", (True, False)),
    ("replay", ("whole", "bytewise", "off", "split7")),
)
"""Read in this order, one byte each (the last byte of the input first);
the choice is ``byte % len(choices)``, so a zero byte picks the first."""

_HIDE_BITS = (
    "hide_starttls", "hide_pipelining", "hide_enhancedstatuscodes", "hide_8bitmime",
    "hide_smtputf8", "hide_size", "hide_chunking", "needs_upgrade",
)

MARK = 0xFF
MARKERS = {
    0x00: "split",  # end the current chunk: receive_data(), then drain
    0x01: "eof",  # receive_data(b"")
    0x02: "greet",  # send_greeting() (expects LocalProtocolError if not GREETING)
    0x03: "shutdown",  # shutdown() with a code and text from the decision bytes
    0x04: "idle",  # idle_timeout()
    0x05: "tls",  # tls_established() (expects LocalProtocolError where not allowed)
    0x06: "take",  # take_buffered_data() (in GREETING or COMMAND state only)
}
"""``0xFF`` then one of these bytes is an action; ``FF FF`` is a literal
``FF``; ``FF`` before any other byte (or at the end) is a literal ``FF``."""
_MARKER_BYTES = {name: bytes([MARK, code]) for code, name in MARKERS.items()}

# Tables the decision bytes index into.
TEXTS = (
    "", "OK", "two\nlines", "crlf\r\ninjected", "bare\rCR", "ctrl \x00\x01\x1b[31m\x7f",
    "\u00fcn\u00efc\u00f8d\u00e9 \u2713 \u6f22\u5b57 \U0001f642", "\udc80\udcff raw bytes",
    "x" * 600, "trailing\n", "\n\n", "250 fake reply", "%s %s", "   ",
)
USERS: tuple[object, ...] = (None, "alice", "", 42, {"id": 7})
ENHANCED_TAILS = (None, "0.0", "1.1", "5.4", "7.0", "999.999")
CHALLENGES: tuple[str | bytes, ...] = (
    b'{"status":"401","schemes":"bearer","scope":"mail"}', "", "err\x00\xff", b"\x00" * 40,
)
SHUTDOWN_CODES = (421, 554, 450, 521)


@dataclass(frozen=True)
class Setup:
    """Everything the config bytes decide."""

    config: ServerConfig
    remote_address: str | None
    implicit_tls: bool
    expect_proxy: bool | None
    greeting: str
    eof_at_end: bool
    replay: str

    def connection(self, *, fresh: bool = False) -> ServerConnection:
        """The connection; ``fresh`` gives it its own CRAM-MD5 challenge sequence."""
        config = self.config
        if fresh:
            config = dataclasses.replace(config, cram_md5_challenge=_cram_challenges())
        return ServerConnection(
            config, remote_address=self.remote_address, remote_port=2525,
            local_address="192.0.2.25", local_port=25, session_id="fuzz",
            tls=_TLS if self.implicit_tls else None, expect_proxy=self.expect_proxy,
        )


_TLS = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", bits=128,
               servername="mx.example.com")


def _cram_challenges() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"<{next(counter)}.1700000000@fuzz.example>"


def read_setup(fdp: Provider) -> Setup:
    v: dict[str, object] = {}
    for name, choices in CONFIG_FIELDS:
        v[name] = choices[fdp.ConsumeIntInRange(0, len(choices) - 1)]
    hide = v.pop("hide_flags")
    xcx = v.pop("xclient_xforward")
    dsn = v.pop("dsn_flags")
    name, banner, helo, auth_msg = _TEXT_SETS[v.pop("texts")]  # type: ignore[call-overload]
    assert isinstance(hide, int) and isinstance(xcx, int) and isinstance(dsn, int)
    options = {
        "lmtp": v.pop("lmtp"),
        "auth_optional": v.pop("auth_optional"),
        "allow_insecure_auth": v.pop("allow_insecure_auth"),
        "auth_methods": v.pop("auth_methods"),
        "size": v.pop("size"),
        "bare_line_endings": v.pop("bare_line_endings"),
        "use_proxy": v.pop("use_proxy"),
        "use_xclient": bool(xcx & 1),
        "use_xforward": bool(xcx & 2),
        "hide_dsn": bool(dsn & 1),
        "hide_requiretls": bool(dsn & 2),
        "max_command_length": v.pop("max_command_length"),
        "max_recipients": v.pop("max_recipients"),
        "max_invalid_commands": v.pop("max_invalid_commands"),
        "max_auth_failures": v.pop("max_auth_failures"),
        "max_allowed_unauthenticated_commands": v.pop("max_allowed_unauthenticated_commands"),
        "disabled_commands": v.pop("disabled_commands"),
        "reject_early_talkers": v.pop("reject_early_talkers"),
        "name": name, "banner": banner, "helo_response": helo,
        "auth_required_message": auth_msg,
        "cram_md5_challenge": _cram_challenges(),
    }
    for bit, flag in enumerate(_HIDE_BITS):
        options[flag] = bool(hide >> bit & 1)
    return Setup(
        config=ServerConfig(**options),  # type: ignore[arg-type]
        remote_address=v.pop("remote_address"),  # type: ignore[arg-type]
        implicit_tls=bool(v.pop("implicit_tls")),
        expect_proxy=v.pop("expect_proxy"),  # type: ignore[arg-type]
        greeting=str(v.pop("greeting")),
        eof_at_end=bool(v.pop("eof_at_end")),
        replay=str(v.pop("replay")),
    )


def parse_script(conv: bytes) -> list[tuple[str, bytes]]:
    """The conversation bytes as steps: ``("data", chunk)`` or ``(action, b"")``."""
    steps: list[tuple[str, bytes]] = []
    cur = bytearray()
    pos = 0
    while True:
        i = conv.find(MARK, pos)
        if i < 0 or i + 1 >= len(conv):
            cur += conv[pos:]
            break
        cur += conv[pos:i]
        code = conv[i + 1]
        action = MARKERS.get(code)
        if code == MARK:
            cur.append(MARK)
        elif action is None:
            cur.append(MARK)
            pos = i + 1
            continue
        else:
            if cur:
                steps.append(("data", bytes(cur)))
                cur.clear()
            if action != "split":
                steps.append((action, b""))
        pos = i + 2
    if cur:
        steps.append(("data", bytes(cur)))
    return steps


def encode_input(
    steps: list[tuple[str, bytes]] | bytes,
    decisions: list[int] | tuple[int, ...] = (),
    **config: int,
) -> bytes:
    """Build an input: the inverse of what :func:`one_input` reads.

    ``steps`` are ``("data", bytes)`` / ``("split"|"eof"|..., b"")`` (or one
    bytes object); ``decisions`` the decision numbers in the order they are
    consumed; ``config`` maps names of :data:`CONFIG_FIELDS` to the index of
    the wanted choice (0 if not given).
    """
    if isinstance(steps, bytes):
        steps = [("data", steps)]
    conv = bytearray()
    previous = ""
    for kind, data in steps:
        if kind == "data":
            if previous == "data":
                conv += _MARKER_BYTES["split"]
            conv += data.replace(b"\xff", b"\xff\xff")
        else:
            conv += _MARKER_BYTES[kind]
        previous = kind
    names = [name for name, _ in CONFIG_FIELDS]
    unknown = set(config) - set(names)
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    if len(decisions) > 255:
        raise ValueError("at most 255 decision bytes")
    tail = bytes(reversed(decisions)) + bytes([len(decisions)])
    tail += bytes(reversed([config.get(name, 0) for name in names]))
    return bytes(conv) + tail

