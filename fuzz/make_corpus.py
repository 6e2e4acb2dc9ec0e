"""Regenerate the seed corpus in fuzz/corpus/ (run from anywhere).

Each seed is built with ``harness.encode_input``: a conversation (with
chunk and action markers), the decision numbers in the order the harness
consumes them, and the config choices. ``python fuzz/make_corpus.py`` rewrites
the folder; ``--check`` only verifies that the files on disk match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import TEXTS, encode_input  # noqa: E402

CORPUS = HERE / "corpus"

# -- decision helpers (see Driver.decide) ------------------------------------------

ACCEPT = [0]
DEFER = [6]
SHUTDOWN_WHILE_DECIDING = [8]
REJECT_421 = [9]
ESTABLISH_TLS = [0]  # a StartTLS event: call tls_established() at once
HOLD_TLS = [1]  # ... or leave the handshake pending


def accept_with(code: int = 250, text: int = 1, enhanced: int = 0, user: int = 1) -> list[int]:
    return [1, code - 200, text, enhanced, user]


def reject(code: int) -> list[int]:
    return [2, code - 400]


def reject_with(code: int, text: int, enhanced: int = 0) -> list[int]:
    return [3, code - 400, text, enhanced]


def reject_challenge(code: int, text: int = 0, enhanced: int = 0, challenge: int = 0) -> list[int]:
    return [4, code - 400, text, enhanced, challenge]


def answer_recipients(*replies: tuple[int, int]) -> list[int]:
    """(class index 0/1/2 = 250/450/550, offset) per recipient."""
    out = [5]
    for cls, offset in replies:
        out += [cls, offset, 1, 0]
    return out


def misuse(probe: int) -> list[int]:
    """A misuse probe (0-8, see Driver._misuse): it must raise and change nothing."""
    return [7, probe]


def shutdown_marker(code_index: int = 0, text: int = 1) -> list[int]:
    return [code_index, text]


# -- conversation helpers ------------------------------------------------------------

def split(*chunks: bytes) -> list[tuple[str, bytes]]:
    """Chunks fed with a separate receive_data() each."""
    return [("data", c) for c in chunks if c]


def act(name: str) -> tuple[str, bytes]:
    return (name, b"")


def lines(*items: str | bytes) -> bytes:
    return b"".join((i.encode() if isinstance(i, str) else i) + b"\r\n" for i in items)


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


EHLO = "EHLO client.example"
TXN = ["MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.org>"]


def proxy_v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, family]) + \
        struct.pack("!H", len(body)) + body


def v2_tcp4() -> bytes:
    addrs = bytes([203, 0, 113, 7, 192, 0, 2, 25]) + struct.pack("!HH", 51234, 25)
    tlv = bytes([0x02]) + struct.pack("!H", 14) + b"mx.example.com"
    return proxy_v2(1, 0x11, addrs, tlv)


def v2_tcp6() -> bytes:
    addrs = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 40000, 587)
    return proxy_v2(1, 0x21, addrs)


def cram_response(user: str, challenge_no: int = 1) -> str:
    challenge = f"<{challenge_no}.1700000000@fuzz.example>"
    digest = hmac.new(b"secret", challenge.encode(), hashlib.md5).hexdigest()
    return b64(f"{user} {digest}")


# -- the seeds -------------------------------------------------------------------

def seeds() -> dict[str, bytes]:
    s: dict[str, bytes] = {}
    body = lines("Subject: hi", "", "Hello", ".leading dot", "..two dots", ".")

    s["ehlo_data_quit"] = encode_input(lines(EHLO, *TXN, "DATA") + body + lines("QUIT"))
    s["helo_split_everywhere"] = encode_input(split(
        b"HE", b"LO client\r", b"\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDA",
        b"TA\r\n", b"line one\r\n.", b"stuffed\r\n\r", b"\n.", b"\r", b"\nQUIT\r\n",
    ), replay=1)
    s["pipelining_two_transactions"] = encode_input(
        lines(EHLO, *TXN, "RCPT TO:<carol@example.org>", "DATA") + body
        + lines("RSET", "NOOP", "VRFY bob", "EXPN list", "HELP", *TXN, "DATA") + body
        + lines("QUIT"),
        decisions=[*ACCEPT, *ACCEPT, *reject(550), *ACCEPT, *accept_with(251, 2, 1, 0),
                   *ACCEPT, *ACCEPT, *reject_with(452, 3, 2)],
        replay=3,
    )
    s["bdat_chunks"] = encode_input(split(
        lines(EHLO, "MAIL FROM:<a@b.example> BODY=BINARYMIME", "RCPT TO:<c@d.example>")
        + b"BDAT 5\r\nhello", b"BDAT 7\r\n\r\n.\r\nxy", b"\r\nBDAT 0 LAST\r\n",
        lines("MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>") + b"BDAT 3 LAST\r\nabcQUIT\r\n",
    ))
    s["bdat_errors"] = encode_input(lines(
        EHLO, "BDAT 4", "abcd", "BDAT x", "BDAT 1 NOTLAST", "BDAT 99999999999999999999999",
        "MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>", "BDAT 2", "ab",
        "RCPT TO:<e@f.example>", "DATA", "MAIL FROM:<x@y.example>", "RSET", "QUIT",
    ))
    s["bdat_interrupted_by_ehlo"] = encode_input(lines(
        EHLO, *TXN, "BDAT 3", "xyz", EHLO, *TXN, "BDAT 2", "ok", "QUIT",
    ))
    s["size_limit"] = encode_input(
        lines(EHLO, "MAIL FROM:<a@b.example> SIZE=5000", "MAIL FROM:<a@b.example> SIZE=50",
              "RCPT TO:<c@d.example>", "DATA") + b"x" * 150 + b"\r\n.\r\n"
        + lines(*TXN) + b"BDAT 120 LAST\r\n" + b"y" * 120 + lines("QUIT"),
        size=1,  # 100 bytes
    )
    s["auth_plain_required"] = encode_input(
        lines(EHLO, "MAIL FROM:<a@b.example>", "AUTH PLAIN " + b64("\0alice\0pw"), *TXN, "DATA")
        + body + lines("QUIT"),
        auth_optional=1,
    )
    s["auth_plain_challenge_cancel"] = encode_input(
        lines(EHLO, "AUTH PLAIN", "*", "AUTH PLAIN", "!!!notbase64", "AUTH PLAIN",
              b64("alice\0alice\0secret"), "AUTH PLAIN =", "QUIT"),
        decisions=[*ACCEPT, *reject(535)],
        auth_optional=1,
    )
    s["auth_login"] = encode_input(
        lines(EHLO, "AUTH LOGIN", b64("alice"), b64("secret"), "AUTH LOGIN " + b64("bob"),
              b64("pw"), *TXN, "QUIT"),
        decisions=[*ACCEPT, *reject_with(535, 1, 1), *accept_with(235, 1, 4, 3)],
        auth_optional=1,
    )
    s["auth_cram_md5"] = encode_input(
        lines(EHLO, "AUTH CRAM-MD5", cram_response("alice"), "AUTH CRAM-MD5 initial",
              "AUTH CRAM-MD5", cram_response("alice", 3), "QUIT"),
        decisions=[*ACCEPT, *reject(535), *ACCEPT],
        auth_optional=1,
    )
    s["auth_xoauth2_error_challenge"] = encode_input(
        lines(EHLO, "AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer tok\x01\x01"), "",
              "AUTH XOAUTH2", b64("user=alice\x01auth=Bearer tok2\x01\x01"), *TXN, "QUIT"),
        decisions=[*ACCEPT, *reject_challenge(535, 0, 0, 0), *ACCEPT],
        auth_optional=1,
    )
    s["auth_failures_limit"] = encode_input(
        lines(EHLO, *[f"AUTH PLAIN {b64('a' + chr(0) + 'alice' + chr(0) + 'bad')}"] * 4, "QUIT"),
        decisions=[*ACCEPT, *reject(535), *reject(535), *reject(454)],
        auth_optional=1, max_auth_failures=3,  # 1 failure allowed
    )
    s["auth_insecure_refused_then_starttls"] = encode_input(
        lines(EHLO, "AUTH PLAIN " + b64("\0alice\0pw"), "STARTTLS")
        + lines("MAIL FROM:<injected@evil.example>"),
        allow_insecure_auth=1, auth_optional=1,
    )
    s["starttls_injection"] = encode_input(split(
        lines(EHLO, "STARTTLS", "MAIL FROM:<injected@evil.example>"),
        lines(EHLO, "STARTTLS", *TXN, "DATA") + body + lines("QUIT"),
    ), decisions=[*ACCEPT, *ESTABLISH_TLS, *ACCEPT, *ACCEPT, *ACCEPT, *ACCEPT])
    s["starttls_handshake_held"] = encode_input(
        [("data", lines(EHLO, "STARTTLS")), ("data", b"garbage during handshake\r\n"),
         act("tls"), ("data", lines(EHLO, "STARTTLS", "QUIT"))],
        decisions=[*ACCEPT, *HOLD_TLS, *ACCEPT],
    )
    s["lmtp_answer_recipients"] = encode_input(
        lines("LHLO client", "MAIL FROM:<a@b.example>", "RCPT TO:<one@example.org>",
              "RCPT TO:<two@example.org>", "RCPT TO:<three@example.org>", "DATA") + body
        + lines("MAIL FROM:<a@b.example>", "RCPT TO:<one@example.org>",
                "RCPT TO:<two@example.org>", "DATA") + body + lines("EHLO wrong", "QUIT"),
        decisions=[*ACCEPT, *ACCEPT, *ACCEPT, *reject(550), *ACCEPT,
                   *answer_recipients((0, 0), (2, 3)),
                   *ACCEPT, *ACCEPT, *ACCEPT, *ACCEPT, *reject_with(452, 2, 1)],
        lmtp=1,
    )
    s["lmtp_bdat"] = encode_input(
        lines("LHLO client", *TXN, "RCPT TO:<x@example.org>") + b"BDAT 4 LAST\r\nbody"
        + lines("QUIT"),
        lmtp=1,
    )
    s["proxy_v1_tcp4"] = encode_input(
        b"PROXY TCP4 203.0.113.7 192.0.2.25 51234 25\r\n" + lines(EHLO, *TXN, "QUIT"),
        use_proxy=1,
    )
    s["proxy_v1_tcp6_split"] = encode_input(split(
        b"PROXY TCP6 2001:db8::1 ", b"2001:db8::2 40000 587\r\nEHLO x\r\n", lines("QUIT"),
    ), use_proxy=2, remote_address=1)
    s["proxy_v1_unknown"] = encode_input(b"PROXY UNKNOWN\r\n" + lines(EHLO, "QUIT"), use_proxy=1)
    s["proxy_v2_tcp4_tlv"] = encode_input(v2_tcp4() + lines(EHLO, *TXN, "QUIT"), use_proxy=1)
    s["proxy_v2_local"] = encode_input(
        proxy_v2(0, 0x00, b"") + lines(EHLO, "QUIT"), use_proxy=3, remote_address=4,
    )
    s["proxy_v2_tcp6_implicit_tls"] = encode_input(
        [("data", v2_tcp6() + b"\x16\x03\x01 tls client hello"), act("take"), act("tls"),
         act("greet"), ("data", lines(EHLO, "STARTTLS", "QUIT"))],
        use_proxy=1, greeting=2,
    )
    s["proxy_invalid"] = encode_input(b"PROXY TCP4 999.0.0.1 1.2.3.4 1 2\r\nEHLO x\r\n",
                                      use_proxy=1)
    s["xclient_login"] = encode_input(
        lines(EHLO, "XCLIENT LOGIN=alice HELO=[UNAVAILABLE]", EHLO,
              "XCLIENT NAME=mail.example.com ADDR=203.0.113.9 PORT=4567 PROTO=ESMTP",
              "MAIL FROM:<a@b.example>", EHLO, "XCLIENT ADDR=IPV6:2001:db8::5", *TXN, "QUIT"),
        xclient_xforward=1, auth_optional=1, max_allowed_unauthenticated_commands=1,
    )
    s["xclient_login_rejected"] = encode_input(
        lines(EHLO, "XCLIENT LOGIN=mallory", "XCLIENT LOGIN=[TEMPUNAVAIL] ADDR=IPV6:2001:db8::5",
              "XCLIENT PORT=99999", "XCLIENT FOO=bar", "MAIL FROM:<a@b.example>", "QUIT"),
        decisions=[*ACCEPT, *reject(550)],
        xclient_xforward=3,
    )
    s["xforward"] = encode_input(
        lines(EHLO, "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP",
              "XFORWARD HELO=spike.porcupine.org IDENT=abc SOURCE=REMOTE", "XFORWARD BOGUS=1",
              *TXN, "XFORWARD NAME=late", "QUIT"),
        xclient_xforward=2,
    )
    s["smuggling_bare_lf_keep"] = encode_input(
        lines(EHLO, *TXN, "DATA")
        + b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@x.example>\n\r.\r\r\n.\n\r\n.\r\n"
        + lines("QUIT"),
    )
    s["smuggling_bare_lf_reject"] = encode_input(
        split(lines(EHLO, *TXN, "DATA") + b"a\r\n.\n", b"RCPT TO:<evil@x.example>\r",
              b".\r\n\r\n.\r\nQUIT\r\n"),
        bare_line_endings=1,
    )
    s["long_lines"] = encode_input(
        lines(EHLO, "NOOP " + "x" * 3000, "MAIL FROM:<a@b.example> " + "X" * 1200, *TXN,
              "AUTH PLAIN " + "A" * 13000, "QUIT"),
        max_command_length=2,  # 100
    )
    s["long_line_split_skipping"] = encode_input(split(
        lines(EHLO), b"NOOP " + b"y" * 700, b"z" * 700, b"\r\nNOOP\r\nQUIT\r\n",
    ))
    s["http_request"] = encode_input(lines("GET / HTTP/1.1", "Host: mx.example.com"))
    s["too_many_invalid"] = encode_input(
        lines(*[f"BOGUS{i}" for i in range(6)], "HELO", "RCPT TO:<x@y.example>", "QUIT"),
        max_invalid_commands=4,  # 3
    )
    s["unauthenticated_limit"] = encode_input(
        lines(EHLO, "NOOP", "NOOP", "MAIL FROM:<a@b.example>", "HELP", "QUIT"),
        auth_optional=1, max_allowed_unauthenticated_commands=3,  # 2
    )
    s["needs_upgrade"] = encode_input(
        split(lines(EHLO, "MAIL FROM:<a@b.example>", "AUTH PLAIN " + b64("\0a\0b"), "STARTTLS"),
              lines(EHLO, "AUTH PLAIN " + b64("\0a\0b"), *TXN, "QUIT")),
        hide_flags=0x80,  # needs_upgrade
    )
    s["early_talker_rejected"] = encode_input(lines(EHLO, "QUIT"), reject_early_talkers=1,
                                              greeting=1)
    s["greeting_marker_late"] = encode_input(
        [("data", lines(EHLO)), act("greet"), act("greet"), ("data", lines("QUIT"))], greeting=2,
    )
    s["shutdown_mid_data"] = encode_input(
        [("data", lines(EHLO, *TXN, "DATA") + b"partial body\r\n"), act("shutdown"),
         ("data", b"more\r\n.\r\n")],
        decisions=[*ACCEPT, *ACCEPT, *ACCEPT, *shutdown_marker(1, 2)],
    )
    s["idle_timeout_in_command"] = encode_input(
        [("data", lines(EHLO, "MAIL FROM:<a@b.example>")), act("idle"), act("eof"),
         ("data", b"after eof")],
    )
    s["eof_inside_data"] = encode_input(lines(EHLO, *TXN, "DATA") + b"unterminated body\r\n.")
    s["mail_parameters"] = encode_input(
        lines(EHLO,
              "MAIL FROM:<\"quoted local\"@[192.0.2.1]> SIZE=100 BODY=8BITMIME RET=HDRS "
              "ENVID=abc+2Bdef AUTH=<>",
              "RCPT TO:<@relay.example:bob@example.org> NOTIFY=SUCCESS,FAILURE "
              "ORCPT=rfc822;bob+40example.org",
              "RCPT TO:<Postmaster>", "RCPT TO:<x@[IPv6:2001:db8::1]>", "RCPT TO:<bad@>",
              "RCPT TO:<j\u00fcrgen@example.org>", "RSET",
              "MAIL FROM:<j\u00fcrgen@b\u00fccher.example> SMTPUTF8 BODY=7BIT",
              "RCPT TO:<\u00e9lo\u00efse@example.org> NOTIFY=NEVER", "RSET",
              "MAIL FROM:<a@b.example> REQUIRETLS", "MAIL FROM:<a@b.example> BOGUS=1",
              "MAIL FROM:<a@b.example> SIZE=1 SIZE=2", "MAIL FROM:<a@b.example>x",
              "MAIL FROM:a@b.example", "RCPT TO:<a@b.example> ORCPT=bad", "QUIT"),
    )
    s["decisions_variety"] = encode_input(
        split(lines(EHLO, TXN[0]),
              lines(TXN[1], "RCPT TO:<c@example.org>", "DATA") + body,
              lines(*TXN, "RCPT TO:<c@example.org>", "DATA") + body,
              lines(*TXN, "QUIT")),
        decisions=[*misuse(3), *DEFER, *accept_with(250, 6, 1, 0), *misuse(0), *misuse(1),
                   *DEFER, *misuse(2),
                   *misuse(4), *reject_with(550, 7, 3), *accept_with(299, 5, 2, 0), *ACCEPT,
                   *ACCEPT, *SHUTDOWN_WHILE_DECIDING],
        replay=3,
    )
    s["misuse_enhanced_and_twice"] = encode_input(
        lines(EHLO, *TXN, "DATA") + body + lines("AUTH PLAIN " + b64("\0alice\0pw"), "QUIT"),
        decisions=[*misuse(8), *misuse(5), *misuse(6), *misuse(7), *misuse(8)],
        auth_optional=0,
    )
    s["reject_421_hello"] = encode_input(lines(EHLO, "NOOP"), decisions=REJECT_421)
    s["implicit_tls_hidden_extensions"] = encode_input(
        lines(EHLO, "STARTTLS", "MAIL FROM:<a@b.example> REQUIRETLS", "RCPT TO:<c@d.example>",
              "BDAT 1 LAST", "x", "QUIT"),
        implicit_tls=1, hide_flags=0x7F, dsn_flags=1,
    )
    s["disabled_commands"] = encode_input(
        lines(EHLO, "VRFY a", "EXPN b", "HELP", "AUTH PLAIN " + b64("\0a\0b"), "QUIT"),
        disabled_commands=4,
    )
    s["texts_and_limits"] = encode_input(
        lines("HELO client.example", *TXN, "RCPT TO:<second@example.org>", "RCPT TO:<third@x.org>",
              "DATA") + body + lines("QUIT"),
        texts=3, max_recipients=2,  # 2 recipients
        decisions=[*accept_with(250, 8, 0, 0), *accept_with(250, 11, 5, 0)],
    )
    s["sasl_lines_too_long"] = encode_input(
        lines(EHLO, "AUTH LOGIN", "A" * 12400,
              "AUTH XOAUTH2 " + b64("user=a\x01auth=Bearer t\x01\x01"), "B" * 12400, "NOOP",
              "QUIT"),
        decisions=[*ACCEPT, *reject_challenge(535, 1, 0, 1)],
    )
    s["proxy_v2_unix"] = encode_input(
        proxy_v2(1, 0x31, b"/run/client.sock".ljust(108, b"\0")
                 + b"/run/smtp.sock".ljust(108, b"\0")) + lines(EHLO, "QUIT"),
        use_proxy=1,
    )
    s["proxy_v1_bad_port"] = encode_input(
        b"PROXY TCP4 192.0.2.1 192.0.2.2 0123 25\r\n" + lines(EHLO), use_proxy=1,
    )
    s["proxy_v1_short"] = encode_input(b"PROXY TCP6 ::1\r\n" + lines(EHLO), use_proxy=1)
    s["smtputf8_flag_value"] = encode_input(
        lines(EHLO, "MAIL FROM:<a@b.example> SMTPUTF8=yes", "MAIL FROM:<a@b.example> BODY",
              "MAIL FROM:<> BODY=BINARYMIME", "RCPT TO:<c@d.example>", "DATA", "RSET", "QUIT"),
    )
    return s


def main(argv: list[str]) -> int:
    built = seeds()
    if "--check" in argv:
        on_disk = {p.name: p.read_bytes() for p in CORPUS.iterdir()}
        if on_disk != built:
            print("fuzz/corpus/ is out of date: run python fuzz/make_corpus.py")
            return 1
        return 0
    CORPUS.mkdir(exist_ok=True)
    for path in CORPUS.iterdir():
        path.unlink()
    for name, data in built.items():
        (CORPUS / name).write_bytes(data)
    print(f"wrote {len(built)} seeds to {CORPUS}")
    return 0


assert len(TEXTS) > 11  # the seeds index TEXTS up to 11

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
