"""Where certificates come from, and the TLS options around them.

Each function returns a configured server; the paths are relative to the
current directory (``cert/...``) unless they are Let's Encrypt's.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from smtp_anyio import Session, SMTPServer, TLSInfo


def from_files() -> SMTPServer:
    return SMTPServer(key="cert/key.pem", cert="cert/cert.pem")


def from_pem_text() -> SMTPServer:
    # PEM text (str or bytes) works as well as a path, e.g. from a secrets store
    return SMTPServer(key=os.environ["SMTP_TLS_KEY"], cert=os.environ["SMTP_TLS_CERT"])


def with_passphrase() -> SMTPServer:
    return SMTPServer(
        key="cert/key-encrypted.pem",
        cert="cert/cert.pem",
        passphrase=os.environ["SMTP_TLS_PASSPHRASE"],
    )


def lets_encrypt(domain: str, live: Path = Path("/etc/letsencrypt/live")) -> SMTPServer:
    return SMTPServer(
        name=domain,
        key=live / domain / "privkey.pem",
        cert=live / domain / "fullchain.pem",  # the certificate and its intermediates
    )


async def log_tls(tls: TLSInfo, session: Session) -> None:
    print(f"[{session.id}] {tls.version} {tls.cipher} SNI={tls.servername}", flush=True)


def with_sni() -> SMTPServer:
    return SMTPServer(
        # for clients that send no SNI or a name not listed below
        key="cert/default-key.pem",
        cert="cert/default-cert.pem",
        sni_options={
            "mail.example.com": {
                "key": "cert/example-key.pem",
                "cert": "cert/example-cert.pem",
            },
            "smtp.example.net": {
                "key": "cert/another-key.pem",
                "cert": "cert/another-cert.pem",
            },
        },
        on_secure=log_tls,
    )


def tls13_only() -> SMTPServer:
    # a submission port whose clients you control; an MX should accept TLSv1.2
    return SMTPServer(key="cert/key.pem", cert="cert/cert.pem", min_version="TLSv1.3")


def from_ssl_context() -> SMTPServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain("cert/cert.pem", "cert/key.pem")
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2 suites only
    if "SSLKEYLOGFILE" in os.environ:  # let Wireshark decrypt a capture (development!)
        context.keylog_filename = os.environ["SSLKEYLOGFILE"]
    return SMTPServer(tls_context=context)
