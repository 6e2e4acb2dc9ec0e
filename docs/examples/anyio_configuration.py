"""Two typical configurations: an MX for inbound mail, and a submission
server for your own users."""

from __future__ import annotations

import logging

from smtp_anyio import SMTPServer


def mx_server(cert_file: str, key_file: str) -> SMTPServer:
    """Port 25: mail for our domains from anywhere, no AUTH."""
    return SMTPServer(
        name="mx.example.org",
        auth_methods=(),  # no AUTH on an MX
        key=key_file,  # opportunistic STARTTLS
        cert=cert_file,
        size=25 * 1024 * 1024,  # SIZE 26214400; bigger gets 552 5.3.4
        max_recipients=100,  # the 101st RCPT gets 452 4.5.3
        max_clients=1000,  # connection 1001 gets 421 and is closed
        socket_timeout=300,  # RFC 5321 section 4.5.3.2: minutes, not seconds
        reject_early_talkers=True,  # speaking before the greeting: 421
        bare_line_endings="reject",  # bare CR/LF in DATA: 554 5.6.0
        logger=logging.getLogger("mail.mx"),
    )


def submission_server(cert_file: str, key_file: str) -> SMTPServer:
    """Port 587: your users, after STARTTLS and AUTH."""
    return SMTPServer(
        name="smtp.example.org",
        banner="Submission only, see https://example.org/help",
        key=key_file,
        cert=cert_file,
        needs_upgrade=True,  # MAIL and AUTH before STARTTLS: 530 5.7.0
        auth_methods=["PLAIN", "LOGIN"],
        max_auth_failures=3,  # the 4th failure: 421 and the connection closes
        size=50 * 1024 * 1024,
        close_timeout=60,  # close() lets messages in flight finish for up to 60 s
    )


def hardened_mx(cert_file: str, key_file: str,
                trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")) -> SMTPServer:
    """Port 25 facing the Internet, for a server that relays what it
    stores: the limits of the security page, tightened."""
    return SMTPServer(
        name="mx.example.org",
        auth_methods=(),
        key=key_file,
        cert=cert_file,
        size=25 * 1024 * 1024,
        max_connections_per_client=20,  # the 21st from one address: 421 4.7.0
        client_limit_exceptions=trusted,  # your own networks are not limited
        command_timeout=30,  # a command line must arrive whole within 30 s
        min_data_rate=2048,  # ... and a body earns 1 s more per 2 KiB
        forbid_unauth_pipelining=True,  # body sent before the 354: 554 5.5.0
        bare_line_endings="reject",  # bare CR/LF in DATA: 554 5.6.0
    )
