"""HAProxy PROXY protocol headers, version 1 (text) and 2 (binary).

Reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
A receiver that expects the header must refuse a connection without a valid
one, and must never guess: so any deviation is an error.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

from ._events import ProxyHeader

__all__ = ["MAX_V1_LENGTH", "V2_SIGNATURE", "parse_proxy_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1_LENGTH = 107  # the spec's worst case, CRLF included
_V1_PREFIX = b"PROXY "
_V2_FAMILIES = {
    0x00: ("UNKNOWN", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNIX", 216),
}


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ValueError("bad port")
    port = int(text)
    if port > 65535:
        raise ValueError("bad port")
    return port


def _parse_v1(line: bytes) -> ProxyHeader:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("non-ASCII PROXY v1 header") from None
    parts = text.split(" ")
    if parts[0] != "PROXY" or len(parts) < 2:
        raise ValueError("bad PROXY v1 header")
    if parts[1] == "UNKNOWN":
        return ProxyHeader(version=1, command="PROXY", protocol="UNKNOWN")
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ValueError("bad PROXY v1 header")
    # ipaddress reads any text after "%" as an IPv6 zone, a bare CR or LF
    # included (only CRLF ends the line): it would become the session's
    # address. The spec's addresses are inet_ntop's, which has no zone.
    if "%" in parts[2] or "%" in parts[3]:
        raise ValueError("bad PROXY v1 address")
    cls = ipaddress.IPv4Address if parts[1] == "TCP4" else ipaddress.IPv6Address
    src, dst = cls(parts[2]), cls(parts[3])
    return ProxyHeader(
        version=1, command="PROXY", protocol=parts[1],
        source_address=str(src), source_port=_port(parts[4]),
        dest_address=str(dst), dest_port=_port(parts[5]),
    )


def _unix_path(raw: bytes) -> str:
    """A v2 UNIX address, NUL-padded. It becomes the session's address: a
    path that is not UTF-8 or holds a control character (a CR or LF to forge
    a log or header line) is refused rather than guessed at."""
    try:
        path = raw.split(b"\x00", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("bad PROXY v2 UNIX address") from None
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in path):
        raise ValueError("bad PROXY v2 UNIX address")
    return path


def _parse_v2(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    if len(buf) < 16:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", buf, 12)
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F not in (0, 1):
        raise ValueError("bad PROXY v2 version/command")
    if len(buf) < 16 + length:
        return None
    body = bytes(buf[16 : 16 + length])
    command: Literal["PROXY", "LOCAL"] = "LOCAL" if ver_cmd & 0x0F == 0 else "PROXY"
    if fam not in _V2_FAMILIES:
        raise ValueError("bad PROXY v2 family")
    protocol, addr_len = _V2_FAMILIES[fam]
    if len(body) < addr_len:
        raise ValueError("short PROXY v2 address block")
    src = dst = None
    sport = dport = None
    if addr_len == 12:
        src = str(ipaddress.IPv4Address(body[0:4]))
        dst = str(ipaddress.IPv4Address(body[4:8]))
        sport, dport = struct.unpack_from("!HH", body, 8)
    elif addr_len == 36:
        src = str(ipaddress.IPv6Address(body[0:16]))
        dst = str(ipaddress.IPv6Address(body[16:32]))
        sport, dport = struct.unpack_from("!HH", body, 32)
    elif addr_len == 216:
        src, dst = _unix_path(body[0:108]), _unix_path(body[108:216])
    tlvs = []
    pos = addr_len
    while pos < len(body):
        if pos + 3 > len(body):
            raise ValueError("truncated PROXY v2 TLV")
        kind, size = struct.unpack_from("!BH", body, pos)
        if pos + 3 + size > len(body):
            raise ValueError("truncated PROXY v2 TLV")
        tlvs.append((kind, body[pos + 3 : pos + 3 + size]))
        pos += 3 + size
    header = ProxyHeader(
        version=2, command=command, protocol=protocol,
        source_address=src, source_port=sport, dest_address=dst, dest_port=dport,
        tlvs=tuple(tlvs),
    )
    return header, 16 + length


def parse_proxy_header(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    """Parse a header at the start of ``buf``.

    Returns ``(header, bytes_consumed)``, or ``None`` if more bytes are needed.
    Raises ``ValueError`` if ``buf`` does not start with a valid header.
    """
    if buf.startswith(V2_SIGNATURE):
        return _parse_v2(buf)
    if buf.startswith(_V1_PREFIX):
        end = buf.find(b"\r\n", 0, MAX_V1_LENGTH)
        if end < 0:
            if len(buf) >= MAX_V1_LENGTH:
                raise ValueError("PROXY v1 header too long")
            return None
        return _parse_v1(bytes(buf[:end])), end + 2
    probe = bytes(buf[:12])
    if V2_SIGNATURE.startswith(probe) or _V1_PREFIX.startswith(probe[:6]):
        return None
    raise ValueError("no PROXY header")
