"""AUTH (RFC 4954) with PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195) and XOAUTH2."""

from __future__ import annotations

from typing import Any

import pytest

from smtp_proto import (
    AuthAttempt,
    ConnectionClosed,
    MailFrom,
    RemoteProtocolError,
    ServerConfig,
    State,
)
from tests.proto.driver import greeted
from tests.proto.support import TLS, b64, by_type, cmd, ready, reject_with, talk

CHALLENGE = "<1896.697170952@postoffice.reston.mci.net>"  # RFC 2195 section 2
CRAM_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"  # tim / tanstaaftanstaaf


def auth_config(**options: Any) -> ServerConfig:
    options.setdefault("allow_insecure_auth", True)
    options.setdefault("auth_methods", ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"))
    options.setdefault("cram_md5_challenge", lambda: CHALLENGE)
    return ServerConfig(**options)


def authed(**options: Any) -> Any:
    return ready(auth_config(**options))


def initial(mechanism: str, response: str | bytes) -> str:
    """An AUTH command line with an initial response."""
    return f"AUTH {mechanism} {b64(response)}"


PLAIN_ALICE = b64("\0alice\0secret")
XOAUTH2_ALICE = b64("user=alice@example.com\x01auth=Bearer ya29.token\x01\x01")


# -- successful exchanges ---------------------------------------------------------------

EXCHANGES = [
    # (client lines, server replies before the decision, expected AuthAttempt)
    pytest.param(
        [f"AUTH PLAIN {PLAIN_ALICE}"], [],
        AuthAttempt("PLAIN", "alice", password="secret"), id="plain-initial",
    ),
    pytest.param(
        [f"auth plain {PLAIN_ALICE}"], [],
        AuthAttempt("PLAIN", "alice", password="secret"), id="plain-lowercase",
    ),
    pytest.param(
        ["AUTH PLAIN", PLAIN_ALICE], ["334 "],
        AuthAttempt("PLAIN", "alice", password="secret"), id="plain-continuation",
    ),
    pytest.param(
        [initial("PLAIN", "admin\0alice\0pw")], [],
        AuthAttempt("PLAIN", "alice", password="pw", authzid="admin"), id="plain-authzid",
    ),
    pytest.param(
        [initial("PLAIN", "alice\0\0pw")], [],
        AuthAttempt("PLAIN", "alice", password="pw", authzid="alice"), id="plain-authzid-only",
    ),
    pytest.param(
        [initial("PLAIN", "\0alice\0")], [],
        AuthAttempt("PLAIN", "alice", password=""), id="plain-empty-password",
    ),
    pytest.param(
        [initial("PLAIN", "\0j\u00f6rg\0p\u00e4ss")], [],
        AuthAttempt("PLAIN", "j\u00f6rg", password="p\u00e4ss"), id="plain-utf8",
    ),
    pytest.param(
        ["AUTH LOGIN", b64("bob"), b64("hunter2")],
        ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"],
        AuthAttempt("LOGIN", "bob", password="hunter2"), id="login",
    ),
    pytest.param(
        [initial("LOGIN", "bob"), b64("hunter2")], ["334 UGFzc3dvcmQ6"],
        AuthAttempt("LOGIN", "bob", password="hunter2"), id="login-initial",
    ),
    pytest.param(
        ["AUTH LOGIN", b64("bob"), "="], ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"],
        AuthAttempt("LOGIN", "bob", password=""), id="login-empty-password",
    ),
    pytest.param(
        ["AUTH CRAM-MD5", b64(f"tim {CRAM_DIGEST}")], [f"334 {b64(CHALLENGE)}"],
        AuthAttempt("CRAM-MD5", "tim", challenge=CHALLENGE, response=CRAM_DIGEST),
        id="cram-md5",
    ),
    pytest.param(
        [f"AUTH XOAUTH2 {XOAUTH2_ALICE}"], [],
        AuthAttempt("XOAUTH2", "alice@example.com", access_token="ya29.token"),
        id="xoauth2-initial",
    ),
    pytest.param(
        ["AUTH XOAUTH2", XOAUTH2_ALICE], ["334 "],
        AuthAttempt("XOAUTH2", "alice@example.com", access_token="ya29.token"),
        id="xoauth2-continuation",
    ),
]


@pytest.mark.parametrize(("lines", "challenges", "attempt"), EXCHANGES)
def test_exchange(lines: list[str], challenges: list[str], attempt: AuthAttempt) -> None:
    conn = authed()
    seen: list[AuthAttempt] = []

    def decide(c: Any, event: Any) -> None:
        assert c.data_to_send().decode().split("\r\n")[:-1] == challenges
        seen.append(event)
        c.accept()

    result = talk(conn, cmd(*lines), decide)
    assert seen == [attempt]
    for name in ("password", "authzid", "access_token", "challenge", "response"):
        assert getattr(seen[0], name) == getattr(attempt, name), name
    assert result.replies == ["235 2.7.0 Authentication successful"]
    assert conn.session.user == attempt.username
    assert conn.session.auth_mechanism == attempt.mechanism
    assert conn.session.transmission_type == "ESMTPA"
    assert conn.state is State.COMMAND


def test_334_challenges_carry_no_enhanced_code() -> None:
    conn = authed()
    result = talk(conn, cmd("AUTH LOGIN"))
    assert result.output == b"334 VXNlcm5hbWU6\r\n"
    assert talk(conn, cmd("*")).codes == [501]
    assert talk(conn, cmd("AUTH PLAIN")).output == b"334 \r\n"  # "334" SP, empty challenge


@pytest.mark.parametrize(
    ("password", "ok"),
    [("tanstaaftanstaaf", True), (b"tanstaaftanstaaf", True), ("wrong", False), ("", False)],
)
def test_cram_md5_validate_password(password: str | bytes, ok: bool) -> None:
    conn = authed()
    talk(conn, cmd("AUTH CRAM-MD5"))
    conn.receive_data(cmd(b64(f"tim {CRAM_DIGEST.upper()}")))
    event = conn.next_event()
    assert isinstance(event, AuthAttempt)
    assert event.password is None
    assert event.validate_password(password) is ok


def test_validate_password_needs_cram_md5() -> None:
    assert AuthAttempt("PLAIN", "a", password="x").validate_password("x") is False


def test_cram_md5_challenge_is_fresh_each_time() -> None:
    counter = iter(range(100))
    conn = authed(cram_md5_challenge=lambda: f"<{next(counter)}@example>")
    first = talk(conn, cmd("AUTH CRAM-MD5", "*", "AUTH CRAM-MD5"))
    assert first.replies == [f"334 {b64('<0@example>')}", "501 5.7.0 Authentication aborted",
                             f"334 {b64('<1@example>')}"]


def test_accept_with_custom_user_object() -> None:
    conn = authed()
    account = object()
    talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}"),
         by_type({AuthAttempt: lambda c, _e: c.accept(user=account)}))
    assert conn.session.user is account


def test_after_auth_mail_is_allowed_and_ehlo_hides_auth() -> None:
    conn = authed()
    result = talk(conn, cmd("MAIL FROM:<a@example.com>"))
    assert result.replies == ["530 5.7.0 Error: authentication required"]
    result = talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}", "EHLO again.example",
                            "MAIL FROM:<a@example.com>"))
    assert result.codes == [235, 250, 250]
    assert not any("AUTH" in line for line in result.replies)
    assert result.of(MailFrom)


def test_pipelined_after_initial_response_waits_for_decision() -> None:
    conn = authed()
    conn.receive_data(cmd(f"AUTH PLAIN {PLAIN_ALICE}", "MAIL FROM:<a@example.com>"))
    assert isinstance(conn.next_event(), AuthAttempt)
    assert conn.data_to_send() == b""
    conn.accept()
    assert isinstance(conn.next_event(), MailFrom)
    conn.accept()
    assert conn.data_to_send() == (b"235 2.7.0 Authentication successful\r\n"
                                   b"250 2.1.0 Accepted\r\n")


# -- exchanges that fail before any decision ---------------------------------------------------

FAILURES = [
    # (client lines, final reply)
    pytest.param(["AUTH PLAIN", "*"], "501 5.7.0 Authentication aborted", id="plain-cancel"),
    pytest.param(["AUTH PLAIN", " * "], "501 5.7.0 Authentication aborted", id="cancel-spaces"),
    pytest.param(["AUTH LOGIN", "*"], "501 5.7.0 Authentication aborted", id="login-cancel-1"),
    pytest.param(["AUTH LOGIN", b64("bob"), "*"], "501 5.7.0 Authentication aborted",
                 id="login-cancel-2"),
    pytest.param(["AUTH CRAM-MD5", "*"], "501 5.7.0 Authentication aborted", id="cram-cancel"),
    pytest.param(["AUTH XOAUTH2", "*"], "501 5.7.0 Authentication aborted", id="xoauth2-cancel"),
    pytest.param(["AUTH PLAIN !!!"], "501 5.5.2 Error: cannot decode base64 response",
                 id="plain-bad-b64-initial"),
    pytest.param(["AUTH PLAIN", "abc"], "501 5.5.2 Error: cannot decode base64 response",
                 id="plain-bad-padding"),
    pytest.param(["AUTH PLAIN", "\u00e9\u00e9\u00e9\u00e9"],
                 "501 5.5.2 Error: cannot decode base64 response", id="plain-non-ascii"),
    pytest.param(["AUTH LOGIN", "not base64!"], "501 5.5.2 Error: cannot decode base64 response",
                 id="login-bad-b64"),
    pytest.param(["AUTH CRAM-MD5", "%%%"], "501 5.5.2 Error: cannot decode base64 response",
                 id="cram-bad-b64"),
    pytest.param(["AUTH XOAUTH2 ****"], "501 5.5.2 Error: cannot decode base64 response",
                 id="xoauth2-bad-b64"),
    pytest.param(["AUTH PLAIN ="], "501 5.5.2 Error: invalid userdata", id="plain-empty"),
    pytest.param([initial("PLAIN", "alice")], "501 5.5.2 Error: invalid userdata",
                 id="plain-no-nul"),
    pytest.param([initial("PLAIN", "a\0b\0c\0d")], "501 5.5.2 Error: invalid userdata",
                 id="plain-too-many-nul"),
    pytest.param([initial("PLAIN", "\0\0pw")], "501 5.5.2 Error: invalid userdata",
                 id="plain-no-user"),
    pytest.param([initial("PLAIN", b"\0\xff\0pw")], "501 5.5.2 Error: invalid userdata",
                 id="plain-not-utf8"),
    pytest.param([initial("PLAIN", "\0a\nb\0pw")], "501 5.5.2 Error: invalid userdata",
                 id="plain-control-char"),
    pytest.param(["AUTH LOGIN", "="], "501 5.5.2 Error: invalid userdata", id="login-no-user"),
    pytest.param(["AUTH CRAM-MD5", b64("nodigest")], "501 5.5.2 Error: invalid userdata",
                 id="cram-no-digest"),
    pytest.param([initial("CRAM-MD5", "tim x")],
                 "501 5.5.4 Error: CRAM-MD5 takes no initial response", id="cram-initial"),
    pytest.param([initial("XOAUTH2", "user=a@b.example\x01\x01")],
                 "501 5.5.2 Error: invalid userdata", id="xoauth2-no-token"),
    pytest.param([initial("XOAUTH2", "auth=Bearer t\x01\x01")],
                 "501 5.5.2 Error: invalid userdata", id="xoauth2-no-user"),
    pytest.param([initial("XOAUTH2", "user=a\x01auth=Basic t\x01\x01")],
                 "501 5.5.2 Error: invalid userdata", id="xoauth2-not-bearer"),
    pytest.param(["AUTH"], "501 5.5.4 Error: syntax: AUTH mechanism [initial-response]",
                 id="no-mechanism"),
    pytest.param(["AUTH PLAIN a b"], "501 5.5.4 Error: syntax: AUTH mechanism [initial-response]",
                 id="too-many-args"),
    pytest.param(["AUTH GSSAPI"], "504 5.5.4 Error: unrecognized authentication type",
                 id="unknown-mechanism"),
    pytest.param(["AUTH SCRAM-SHA-256 abc"], "504 5.5.4 Error: unrecognized authentication type",
                 id="unknown-mechanism-initial"),
]


@pytest.mark.parametrize(("lines", "reply"), FAILURES)
def test_exchange_failure(lines: list[str], reply: str) -> None:
    conn = authed()
    result = talk(conn, cmd(*lines))
    assert result.replies[-1] == reply
    assert [c for c in result.codes if c != 334] == [int(reply[:3])]
    assert result.of(AuthAttempt) == []
    assert conn.state is State.COMMAND
    assert conn.session.user is None
    # Syntax failures are not authentication failures.
    assert conn.session.auth_failures == 0
    # And the exchange is over: the next line is a command again.
    assert talk(conn, cmd("NOOP")).replies == ["250 2.0.0 OK"]


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "XOAUTH2"])
def test_mechanism_not_configured(mechanism: str) -> None:
    conn = authed(auth_methods=("PLAIN", "LOGIN"))
    assert talk(conn, cmd(f"AUTH {mechanism}")).replies == [
        "504 5.5.4 Error: unrecognized authentication type"
    ]


# -- when AUTH is not allowed ----------------------------------------------------------------


def test_auth_twice() -> None:
    conn = authed()
    result = talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}", f"AUTH PLAIN {PLAIN_ALICE}"))
    assert result.replies == ["235 2.7.0 Authentication successful",
                              "503 5.5.1 Error: no identity changes permitted"]
    assert len(result.of(AuthAttempt)) == 1


def test_auth_during_transaction() -> None:
    conn = authed(auth_optional=True)
    result = talk(conn, cmd("MAIL FROM:<a@example.com>", f"AUTH PLAIN {PLAIN_ALICE}"))
    assert result.replies[-1] == "503 5.5.1 Error: AUTH not permitted during a mail transaction"


def test_auth_before_hello() -> None:
    conn = greeted(auth_config())
    assert talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}")).replies == [
        "503 5.5.1 Error: send HELO/EHLO first"
    ]


def test_auth_after_helo_is_fine() -> None:
    conn = ready(auth_config(), hello=cmd("HELO c.example"))
    assert talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}")).codes == [235]
    assert conn.session.user == "alice"


@pytest.mark.parametrize(
    ("options", "kwargs", "reply"),
    [
        ({"allow_insecure_auth": False}, {},
         "538 5.7.11 Error: must issue a STARTTLS command first"),
        ({"allow_insecure_auth": False}, {"tls": TLS}, "235 2.7.0 Authentication successful"),
        ({"allow_insecure_auth": True}, {}, "235 2.7.0 Authentication successful"),
        ({"needs_upgrade": True}, {}, "530 5.7.0 Error: must issue a STARTTLS command first"),
        ({"needs_upgrade": True}, {"tls": TLS}, "235 2.7.0 Authentication successful"),
        ({"auth_methods": ()}, {}, "502 5.5.1 Error: command not implemented"),
        ({"disabled_commands": {"AUTH"}}, {}, "502 5.5.1 Error: command not implemented"),
    ],
)
def test_auth_availability(options: dict[str, Any], kwargs: dict[str, Any], reply: str) -> None:
    conn = ready(auth_config(**options), **kwargs)
    result = talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}"))
    assert result.replies == [reply]
    assert bool(result.of(AuthAttempt)) is reply.startswith("235")


# -- rejections and the failure limit ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "reply"),
    [
        (535, None, None, "535 5.7.8 Error: authentication credentials invalid"),
        (535, "Bad password", None, "535 5.7.8 Bad password"),
        (454, "Temporary failure", None, "454 4.7.0 Temporary failure"),
        (534, None, None, "534 5.7.9 Error: authentication credentials invalid"),
        (550, None, None, "550 5.7.8 Error: authentication credentials invalid"),
        (535, "Nope", "5.7.1", "535 5.7.1 Nope"),
    ],
)
def test_rejected(code: int, text: str | None, enhanced: str | None, reply: str) -> None:
    conn = authed()
    result = talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}"),
                  reject_with(AuthAttempt, code, text, enhanced))
    assert result.replies == [reply]
    assert conn.session.user is None
    assert conn.session.auth_failures == 1
    # A failed AUTH may be followed by another one (RFC 4954 section 4).
    assert talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}")).codes == [235]


def test_failures_up_to_the_limit_then_421() -> None:
    conn = authed(max_auth_failures=2)
    lines = cmd(*[f"AUTH PLAIN {PLAIN_ALICE}"] * 3, "NOOP")
    result = talk(conn, lines, reject_with(AuthAttempt, 535))
    assert result.replies == [
        "535 5.7.8 Error: authentication credentials invalid",
        "535 5.7.8 Error: authentication credentials invalid",
        "535 5.7.8 Error: authentication credentials invalid",
        "421 4.7.0 localhost Error: too many failed authentication attempts",
    ]
    assert isinstance(result.error, RemoteProtocolError)
    assert conn.closed and conn.state is State.ERROR
    assert conn.session.auth_failures == 3
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_zero_failures_allowed() -> None:
    conn = authed(max_auth_failures=0)
    result = talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}"), reject_with(AuthAttempt, 535))
    assert result.codes == [535, 421]
    assert result.error is not None


def test_no_failure_limit() -> None:
    conn = authed(max_auth_failures=None, max_invalid_commands=None,
                  max_allowed_unauthenticated_commands=None)
    result = talk(conn, cmd(*[f"AUTH PLAIN {PLAIN_ALICE}"] * 30), reject_with(AuthAttempt, 535))
    assert result.codes == [535] * 30
    assert result.error is None
    assert conn.session.auth_failures == 30


def test_temporary_421_rejection_is_not_counted_and_closes() -> None:
    conn = authed()
    result = talk(conn, cmd(f"AUTH PLAIN {PLAIN_ALICE}", "NOOP"),
                  reject_with(AuthAttempt, 421, "Try later"))
    assert result.replies == ["421 4.3.0 Try later"]
    assert isinstance(result.events[-1], ConnectionClosed)
    assert conn.session.auth_failures == 0


# -- XOAUTH2 error challenge --------------------------------------------------------------------

ERROR_JSON = '{"status":"401","schemes":"bearer"}'


@pytest.mark.parametrize("ack", ["", "=", "anything", "*"])
def test_xoauth2_error_challenge(ack: str) -> None:
    conn = authed()
    result = talk(conn, cmd(f"AUTH XOAUTH2 {XOAUTH2_ALICE}"),
                  by_type({AuthAttempt: lambda c, _e: c.reject(535, challenge=ERROR_JSON)}))
    assert result.replies == [f"334 {b64(ERROR_JSON)}"]
    assert conn.state is State.SASL
    assert conn.session.auth_failures == 0
    result = talk(conn, cmd(ack, "NOOP"))
    assert result.replies == ["535 5.7.8 Error: authentication credentials invalid",
                              "250 2.0.0 OK"]
    assert conn.session.auth_failures == 1
    assert conn.state is State.COMMAND


def test_xoauth2_error_challenge_bytes_and_custom_reply() -> None:
    conn = authed(hide_enhancedstatuscodes=True)
    talk(conn, cmd(f"AUTH XOAUTH2 {XOAUTH2_ALICE}"),
         by_type({AuthAttempt: lambda c, _e: c.reject(535, "Invalid token",
                                                      challenge=ERROR_JSON.encode())}))
    assert talk(conn, cmd("")).replies == ["535 Invalid token"]


def test_xoauth2_error_challenge_counts_towards_the_limit() -> None:
    conn = authed(max_auth_failures=0)
    talk(conn, cmd(f"AUTH XOAUTH2 {XOAUTH2_ALICE}"),
         by_type({AuthAttempt: lambda c, _e: c.reject(535, challenge="{}")}))
    result = talk(conn, cmd(""))
    assert result.codes == [535, 421]
    assert isinstance(result.error, RemoteProtocolError)


def test_xoauth2_error_challenge_acknowledged_with_an_over_long_line() -> None:
    conn = authed()
    talk(conn, cmd(f"AUTH XOAUTH2 {XOAUTH2_ALICE}"),
         by_type({AuthAttempt: lambda c, _e: c.reject(535, challenge="{}")}))
    result = talk(conn, cmd(b"A" * 13000, "NOOP"))
    assert result.replies == ["535 5.7.8 Error: authentication credentials invalid",
                              "250 2.0.0 OK"]
    assert conn.session.auth_failures == 1


@pytest.mark.parametrize("mechanism_line", [f"AUTH PLAIN {PLAIN_ALICE}",
                                            initial("LOGIN", "bob")])
def test_error_challenge_ignored_for_other_mechanisms(mechanism_line: str) -> None:
    conn = authed()
    lines = [mechanism_line] if "PLAIN" in mechanism_line else [mechanism_line, b64("pw")]
    result = talk(conn, cmd(*lines),
                  by_type({AuthAttempt: lambda c, _e: c.reject(535, challenge="{}")}))
    assert result.replies[-1] == "535 5.7.8 Error: authentication credentials invalid"
    assert conn.state is State.COMMAND


# -- line limits ---------------------------------------------------------------------------------


def test_sasl_line_too_long() -> None:
    # RFC 4954 section 4: 500 5.5.6 for an over-long exchange line.
    conn = authed()
    result = talk(conn, cmd("AUTH PLAIN", "A" * 12289, "NOOP"))
    assert result.replies == ["334 ", "500 5.5.6 Error: authentication exchange line is too long",
                              "250 2.0.0 OK"]
    assert conn.state is State.COMMAND


def test_sasl_line_at_the_limit() -> None:
    # 12288 octets of response plus CRLF are allowed.
    conn = authed()
    response = PLAIN_ALICE + " " * (12288 - len(PLAIN_ALICE))
    result = talk(conn, cmd("AUTH PLAIN", response))
    assert result.replies == ["334 ", "235 2.7.0 Authentication successful"]
