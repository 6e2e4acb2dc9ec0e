"""``received_header()``: the ``Received:`` trace header of RFC 5321 section 4.4.

Most of what the header says comes from the client (its HELO name, the
recipient) or from outside the server (reverse DNS, the TLS library), so
every such part is checked before it is written: a part that fits the
grammar goes in as it is; a HELO name that does not goes into a comment,
with each character the header cannot carry written as ``%XX`` (its UTF-8
bytes), and the other parts are left out (``unknown`` for a bad name).
The result never holds a CR or LF except the CRLF + TAB of a fold, nor any
other control character, and it is ASCII unless the transaction used
SMTPUTF8 (RFC 6531 section 3.7.3, RFC 6532: then UTF-8 is allowed).
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import unicodedata
from datetime import datetime

from smtp_proto import AddressError, Envelope, Session, parse_path

__all__ = ["received_header"]

_WIDTH = 78  # RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters
_COMMENT_MAX = 200  # a comment is cut after this many characters (plus "...")
# RFC 5322 section 3.2.3: atext, for the ID and WITH clauses (Atom).
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
_MSG_ID = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\[\]-]+>\Z")
# In a comment "(", ")" and "\" are special (RFC 5322 ctext) and "%" starts
# our escapes: all four are written escaped.
_COMMENT_SPECIALS = frozenset("()\\%")


def _printable(c: str, utf8: bool) -> bool:
    """Can ``c`` appear as itself in the header? Printable ASCII; with UTF-8
    also letters, marks, numbers, punctuation and symbols -- never controls
    (C0, DEL, C1), surrogates (bytes that were not UTF-8), line or paragraph
    separators, invisible format characters or unassigned code points."""
    if " " <= c <= "~":
        return True
    return utf8 and c > "\x9f" and unicodedata.category(c)[0] in "LMNPS"


def _escape(c: str) -> str:
    """``%XX`` for each byte of ``c``: the byte itself for the surrogates of
    undecodable input (surrogateescape), else its UTF-8 bytes."""
    try:
        raw = c.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of another origin
        raw = c.encode("utf-8", "surrogatepass")
    return "".join(f"%{b:02X}" for b in raw)


def _comment_text(text: str, utf8: bool) -> str:
    """``text`` made safe inside ``( )``, cut at ``_COMMENT_MAX`` characters."""
    out: list[str] = []
    size = 0
    for c in text:
        piece = c if _printable(c, utf8) and c not in _COMMENT_SPECIALS else _escape(c)
        if size + len(piece) > _COMMENT_MAX:
            out.append("...")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _is_domain(name: str, utf8: bool) -> bool:
    """RFC 5321 ``Domain / address-literal`` (with RFC 6531 U-labels when
    ``utf8``), every character printable. The core's path grammar checks the
    syntax: a mailbox is ``local-part "@" (Domain / address-literal)``."""
    if not name or not all(_printable(c, utf8) and c != " " for c in name):
        return False
    try:
        parse_path(f"<postmaster@{name}>", utf8=utf8)
    except AddressError:
        return False
    return True


def _address_literal(address: str | None) -> str | None:
    """The client's IP address as an RFC 5321 address-literal (section
    4.1.3: ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``); None if it is none."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # no zone in a literal
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"[{ip.ipv4_mapped}]"
        return f"[IPv6:{ip.compressed}]"
    return f"[{ip}]"


def _recipient(envelope: Envelope, for_recipient: str | bool, utf8: bool) -> str | None:
    if for_recipient is False:
        return None
    if for_recipient is True:
        # RFC 5321 section 4.4: a FOR clause names exactly one recipient.
        if len(envelope.rcpt_to) != 1:
            return None
        for_recipient = envelope.rcpt_to[0].address
    if not all(_printable(c, utf8) for c in for_recipient):
        return None
    try:
        parse_path(f"<{for_recipient}>", utf8=utf8, allow_postmaster=True, sender=False)
    except AddressError:
        return None  # not a Path: leave the clause out rather than mangle it
    return f"<{for_recipient}>"


def _fold(clauses: list[list[str]]) -> str:
    """One line per clause, each further one folded in with CRLF + TAB, and
    long clauses folded again between their tokens (all FWS positions)."""
    lines: list[str] = []
    for number, tokens in enumerate(clauses):
        line = "Received:" if number == 0 else "\t"
        for token in tokens:
            if line.strip() and len(line) + 1 + len(token) > _WIDTH:
                lines.append(line)
                line = "\t" + token
            else:
                line += token if line == "\t" else " " + token
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def received_header(
    session: Session,
    envelope: Envelope | None = None,
    *,
    by: str,
    protocol: str | None = None,
    id: str | None = None,
    for_recipient: str | bool = True,
    date: datetime | None = None,
) -> str:
    """The ``Received:`` trace header (RFC 5321 section 4.4) for a message of
    ``session``, as one string ending in CRLF, each clause after the first
    folded onto its own line with CRLF + TAB::

        Received: from client.example (mail.client.example [192.0.2.7])
            by mx.example.org (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
            with ESMTPS id 3fa2c1d0b9e84f17-1
            for <bob@example.com>; Tue, 24 Nov 2026 10:15:02 +0100

    ``envelope`` is the message's transaction (default: the session's
    current one); ``by`` the server's own domain name or address literal.
    ``protocol`` defaults to the RFC 3848 / RFC 6531 name
    (``session.transmission_type``), ``id`` to ``<session id>-<transaction
    number>``, ``date`` to now (local time). ``for_recipient``: ``True``
    names the recipient when the envelope has exactly one, a string names
    that address, ``False`` leaves the clause out.

    The client's HELO name goes in as the FROM domain when it is a domain
    name or address literal, else the client's address does and the HELO
    name follows in a ``(helo=...)`` comment, escaped; the reverse-DNS
    name likewise appears only if it is a domain name (else ``unknown``).
    The header is ASCII, unless the envelope has SMTPUTF8, when it may be
    UTF-8: ``.encode("utf-8")`` is always right.

    Raises ``ValueError`` if ``by``, ``protocol`` or ``id`` -- the
    application's own values -- do not fit the header's grammar.
    """
    envelope = session.envelope if envelope is None else envelope
    utf8 = envelope.smtputf8
    if not _is_domain(by, utf8):
        raise ValueError(f"by must be a domain name or address literal, not {by!r}")
    if protocol is None:
        protocol = session.transmission_type_for(envelope)
    if not _ATOM.match(protocol):
        raise ValueError(f"protocol must be an atom such as ESMTPS, not {protocol!r}")
    if id is None:
        # One session can carry several messages: the transaction tells them apart.
        ident = f"{session.id}-{session.transaction}" if session.id else None
        if ident is not None and not _ATOM.match(ident):
            ident = None  # a backend's session id the header cannot carry
    elif _ATOM.match(id) or _MSG_ID.match(id):
        ident = id
    else:
        raise ValueError(f"id must be an atom or a msg-id, not {id!r}")

    # FROM: the client's own word for itself, if it is a name (RFC 5321:
    # Domain or address-literal); TCP-info: what the connection says.
    literal = _address_literal(session.remote_address)
    helo = session.host_name_appears_as
    from_clause = ["from"]
    if helo is not None and _is_domain(helo, utf8):
        from_clause.append(helo)
        helo = None
    else:
        from_clause.append(literal or "unknown")
    if literal is not None:
        # client_hostname is "[address]" when reverse DNS found nothing.
        rdns = session.client_hostname
        if not (rdns and _is_domain(rdns, utf8)) or rdns.startswith("["):
            rdns = "unknown"
        from_clause += [f"({rdns}", f"{literal})"]
    if helo is not None:
        from_clause.append(f"(helo={_comment_text(helo, utf8)})")

    by_clause = ["by", by]
    tls = session.tls
    if tls is not None and tls.version and tls.cipher:
        by_clause += ["(using", _comment_text(tls.version, utf8), "with", "cipher",
                      _comment_text(tls.cipher, utf8) + ")"]
    with_clause = ["with", protocol]
    if ident is not None:
        with_clause += ["id", ident]
    clauses = [from_clause, by_clause, with_clause]
    recipient = _recipient(envelope, for_recipient, utf8)
    if recipient is not None:
        clauses.append(["for", recipient])
    stamp = (email.utils.formatdate(localtime=True) if date is None
             else email.utils.format_datetime(date))
    clauses[-1][-1] += ";"
    clauses[-1].append(stamp)
    return _fold(clauses)
