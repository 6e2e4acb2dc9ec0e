"""Postfix XCLIENT and XFORWARD attribute lists.

See https://www.postfix.org/XCLIENT_README.html and XFORWARD_README.html.
Values are xtext; ``[UNAVAILABLE]`` (and for XCLIENT ``[TEMPUNAVAIL]``)
mean "unknown" and become ``None``.
"""

from __future__ import annotations

import ipaddress

from ._address import AddressError, decode_xtext

__all__ = ["XCLIENT_ATTRIBUTES", "XFORWARD_ATTRIBUTES", "parse_attributes"]

XCLIENT_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN")
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
_UNKNOWN = frozenset({"[UNAVAILABLE]", "[TEMPUNAVAIL]"})


def _syntax(text: str = "Error: bad command parameter syntax") -> AddressError:
    return AddressError(501, "5.5.4", text)


def parse_attributes(arg: str, allowed: tuple[str, ...]) -> dict[str, str | None]:
    """``NAME=value ...`` into a dict; ADDR normalised, PORT checked.

    Repeated attributes keep their first value, as Postfix does.
    """
    items = arg.split()
    if not items:
        raise _syntax()
    attrs: dict[str, str | None] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.upper()
        if not eq or key not in allowed:
            raise _syntax()
        if key in attrs:
            continue
        value: str | None = decode_xtext(raw)
        if value is not None and value.upper() in _UNKNOWN:
            value = None
        if value is not None and key == "ADDR":
            candidate = value[5:] if value[:5].upper() == "IPV6:" else value
            try:
                # ipaddress takes any text after "%" as an IPv6 zone; a zone
                # means nothing on another host, so it is no client address.
                if "%" in candidate:
                    raise ValueError(candidate)
                value = str(ipaddress.ip_address(candidate))
            except ValueError:
                raise _syntax("Error: bad command parameter syntax: invalid address") from None
        elif value is not None and key == "PORT":
            if not value.isdigit() or not value.isascii() or int(value) > 65535:
                raise _syntax("Error: bad command parameter syntax: invalid port")
        elif value is not None and key in ("NAME", "HELO"):
            value = value.lower()
        attrs[key] = value
    return attrs
