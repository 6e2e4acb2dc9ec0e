"""RFC 5321 paths, ESMTP parameters and xtext.

Grammar (RFC 5321 section 4.1.2, RFC 6531 section 3.3 for UTF-8)::

    Path       = "<" [ A-d-l ":" ] Mailbox ">"      ; source route ignored
    Mailbox    = Local-part "@" ( Domain / address-literal )
    Local-part = Dot-string / Quoted-string
    Domain     = sub-domain *("." sub-domain)

Every function raises :class:`AddressError` with the reply to send.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["AddressError", "decode_xtext", "parse_params", "parse_path", "split_path"]

_A = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_U = "\x80-\ud7ff\ue000-\U0010ffff"  # UTF8-non-ascii, surrogates excluded
_DOT_STRING = re.compile(rf"[{_A}]+(?:\.[{_A}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"[{_A}{_U}]+(?:\.[{_A}{_U}]+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_QUOTED_UTF8 = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z"
)
_LABEL_UTF8 = re.compile(rf"[A-Za-z0-9{_U}](?:[A-Za-z0-9{_U}-]*[A-Za-z0-9{_U}])?\Z")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# The common case in one match: <dot-string@ascii.domain>.
_SIMPLE_PATH = re.compile(
    rf"<([{_A}]+(?:\.[{_A}]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)>\Z"
)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_MAX_PATH = 256
_MAX_DOMAIN = 255
_MAX_LABEL = 63


class AddressError(ValueError):
    """A path or parameter is unacceptable; carries the reply to send."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.enhanced = enhanced
        self.text = text


def _is_utf8_char(c: str) -> bool:
    # Surrogates come from undecodable bytes (surrogateescape): never valid.
    return c >= "\x80" and not 0xD800 <= ord(c) <= 0xDFFF


def split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path (with brackets) and the rest.

    Tolerates spaces after the colon, as most servers do. The closing bracket
    is found with quoted local parts in mind (``"a>b"@x`` is one path).
    """
    arg = arg.lstrip(" ")
    if not arg.startswith("<"):
        raise AddressError(501, "5.5.4", "Error: address must be enclosed in <>")
    if '"' not in arg:  # the common case: the first ">" closes the path
        end = arg.find(">")
        if end < 0:
            raise AddressError(501, "5.5.4", "Error: unterminated address")
        rest = arg[end + 1 :]
        if rest and rest[0] != " ":
            raise AddressError(501, "5.5.4", "Error: syntax error after address")
        return arg[: end + 1], rest.strip(" ")
    quoted = escaped = False
    for i in range(1, len(arg)):
        c = arg[i]
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            rest = arg[i + 1 :]
            if rest and not rest.startswith(" "):
                raise AddressError(501, "5.5.4", "Error: syntax error after address")
            return arg[: i + 1], rest.strip(" ")
    raise AddressError(501, "5.5.4", "Error: unterminated address")


def _valid_local_part(local: str, utf8: bool) -> bool:
    if local.startswith('"'):
        return (_QUOTED_UTF8 if utf8 else _QUOTED).match(local) is not None
    return (_DOT_STRING_UTF8 if utf8 else _DOT_STRING).match(local) is not None


def _valid_address_literal(literal: str) -> bool:
    try:
        if literal[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(literal[5:])
            return True
        tag, sep, content = literal.partition(":")
        if not sep:
            ipaddress.IPv4Address(literal)
            return True
    except ValueError:
        return False
    # General-address-literal: Standardized-tag ":" 1*dcontent
    return (
        _KEYWORD.match(tag) is not None
        and bool(content)
        and all("!" <= c <= "~" and c not in "[]\\" for c in content)
    )


def _valid_domain(domain: str, utf8: bool) -> bool:
    if domain.startswith("["):
        return domain.endswith("]") and _valid_address_literal(domain[1:-1])
    if domain.isascii():
        return len(domain) <= _MAX_DOMAIN and _DOMAIN.match(domain) is not None
    if len(domain.encode("utf-8")) > _MAX_DOMAIN:
        return False
    label_re = _LABEL_UTF8 if utf8 else _LABEL
    return all(
        label_re.match(label) is not None and len(label.encode("utf-8")) <= _MAX_LABEL
        for label in domain.split(".")
    )


def parse_path(
    path: str,
    *,
    utf8: bool,
    allow_null: bool = False,
    allow_postmaster: bool = False,
    sender: bool = True,
) -> str:
    """Validate ``<...>`` and return the mailbox inside it (``""`` for ``<>``).

    Without ``utf8`` (no SMTPUTF8 in the transaction) a non-ASCII mailbox gets
    553 5.6.7 (RFC 6531 section 3.7.4.1). Source routes are dropped
    (RFC 5321 section 4.1.2 says servers SHOULD ignore them).
    """
    simple = _SIMPLE_PATH.match(path)
    if simple is not None and len(path) <= _MAX_PATH:
        return simple.group(1)
    bad = "5.1.7" if sender else "5.1.3"
    who = "sender" if sender else "recipient"
    if not (path.startswith("<") and path.endswith(">")):
        raise AddressError(501, bad, f"Error: bad {who} address syntax")
    inner = path[1:-1]
    if not inner:
        if allow_null:
            return ""
        raise AddressError(501, bad, f"Error: bad {who} address syntax")
    if len(path) > _MAX_PATH and len(path.encode("utf-8", "surrogatepass")) > _MAX_PATH:
        raise AddressError(501, bad, f"Error: {who} address too long")
    if inner.startswith("@"):
        route, colon, mailbox = inner.partition(":")
        if not colon or any(
            not hop.startswith("@") or len(hop) < 2 for hop in route.split(",")
        ):
            raise AddressError(501, bad, f"Error: bad {who} address syntax")
        inner = mailbox
    if allow_postmaster and inner.lower() == "postmaster":
        return inner
    local, at, domain = inner.rpartition("@")
    if not at:
        raise AddressError(501, bad, f"Error: bad {who} address syntax")
    if not inner.isascii():
        if _SURROGATE.search(inner):
            raise AddressError(501, bad, f"Error: bad {who} address syntax")
        if not utf8:
            raise AddressError(553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8")
    if not (_valid_local_part(local, utf8) and _valid_domain(domain, utf8)):
        raise AddressError(501, bad, f"Error: bad {who} address syntax")
    return inner


def parse_params(text: str, utf8: bool) -> dict[str, str | None]:
    """``KEY[=VALUE] ...`` into a dict with upper-cased keys (RFC 5321 4.1.2).

    Duplicates and malformed items get 501 5.5.4. Values are returned raw;
    decoding (xtext) is the caller's business, as it depends on the keyword.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key):
            raise AddressError(501, "5.5.4", "Error: bad parameter syntax")
        ukey = key.upper()
        if ukey in params:
            raise AddressError(501, "5.5.4", f"Error: duplicate parameter {ukey}")
        if eq:
            if not value or any(
                not ("!" <= c <= "~") and not (utf8 and _is_utf8_char(c)) for c in value
            ):
                raise AddressError(501, "5.5.4", f"Error: bad value for parameter {ukey}")
            params[ukey] = value
        else:
            params[ukey] = None
    return params


def decode_xtext(value: str) -> str:
    """RFC 3461 section 4: ``+XX`` hex escapes. Refuses malformed escapes,
    bytes that are not UTF-8, and decoded control characters -- C0, DEL and
    C1 -- (they enable log and header injection)."""
    if _SURROGATE.search(value):
        # Undecodable input bytes (surrogateescape): xtext is ASCII by
        # definition, and such a value could not even be encoded again.
        raise AddressError(501, "5.5.4", "Error: bad xtext encoding")
    if "+" in value:
        if value.count("+") != len(_XTEXT_HEX.findall(value)):
            raise AddressError(501, "5.5.4", "Error: bad xtext encoding")
        value = _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in value):
        raise AddressError(501, "5.5.4", "Error: control characters not allowed")
    return value
