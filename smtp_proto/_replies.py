"""Reply formatting and the enhanced status codes (RFC 2034 / RFC 3463).

RFC 2034 section 4: with ENHANCEDSTATUSCODES every 2xx, 4xx and 5xx line
carries a status code, except the greeting and any reply to HELO/EHLO (we
treat LHLO alike). 3xx replies (334, 354) never carry one.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "DEFAULT_ENHANCED", "check_enhanced", "check_reply_code", "default_enhanced", "format_reply",
]

DEFAULT_ENHANCED: dict[int, str] = {
    211: "2.0.0",
    214: "2.0.0",
    220: "2.0.0",
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.1.5",
    421: "4.3.0",
    450: "4.2.1",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    455: "4.5.4",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    521: "5.3.2",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.1.1",
    551: "5.1.6",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.6.0",
    555: "5.5.4",
}
"""Enhanced code used when the application rejects with a bare reply code."""


def default_enhanced(code: int) -> str:
    """The enhanced code for ``code``: from the table, else ``class.0.0``."""
    found = DEFAULT_ENHANCED.get(code)
    if found is not None:
        return found
    return f"{code // 100}.0.0"


def check_reply_code(code: int, allowed: str) -> None:
    """Raise ``ValueError`` unless ``code`` is a three-digit code whose first
    digit is in ``allowed``."""
    if not isinstance(code, int) or not 200 <= code <= 599 or str(code)[0] not in allowed:
        raise ValueError(f"reply code {code!r} not allowed here (need {allowed}xx)")


def check_enhanced(code: int, enhanced: str | None) -> None:
    """Raise ``ValueError`` unless ``enhanced`` is None or an RFC 3463 code
    of the same class as ``code``."""
    if enhanced is not None and not _valid_enhanced(code, enhanced):
        raise ValueError(f"enhanced code {enhanced!r} does not fit reply {code}")


def _valid_enhanced(code: int, enhanced: str) -> bool:
    parts = enhanced.split(".")
    return (
        len(parts) == 3
        and parts[0] == str(code)[0]
        and all(p.isdigit() and p.isascii() and 1 <= len(p) <= 3 for p in parts)
    )


@lru_cache(maxsize=512)
def format_reply(code: int, text: str, enhanced: str | None = None) -> bytes:
    """One reply, possibly multi-line (``text`` split on newlines).

    ``enhanced`` is prefixed to every line. Control characters are replaced so
    that no text can inject a line of its own.
    """
    if enhanced is not None and not _valid_enhanced(code, enhanced):
        raise ValueError(f"enhanced code {enhanced!r} does not fit reply {code}")
    lines = text.replace("\r\n", "\n").split("\n")
    prefix = f"{enhanced} " if enhanced else ""
    out = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        clean = "".join(c if c >= " " and c != "\x7f" else " " for c in line)
        sep = " " if i == last else "-"
        # "334" SP [base64] (RFC 4954 section 4): a bare code keeps its space.
        body = f"{prefix}{clean}" if clean else prefix.rstrip(" ")
        out.append(f"{code}{sep}{body}\r\n")
    return "".join(out).encode("utf-8", "surrogateescape")
