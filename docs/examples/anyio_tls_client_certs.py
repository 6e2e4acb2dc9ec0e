"""Client certificates (mutual TLS): relays identify themselves with a
certificate signed by our own CA instead of a password."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smtp_anyio import MessageStream, Session, SMTPError, SMTPServer, TLSInfo

RELAYS = {"relay1.example.net", "relay2.example.net"}


def certificate_names(certificate: Mapping[str, Any] | None) -> set[str]:
    """The common name and DNS names of a certificate (``getpeercert()`` dict)."""
    if not certificate:
        return set()
    subject = certificate.get("subject", ())
    names = {value for rdn in subject for key, value in rdn if key == "commonName"}
    alt_names = certificate.get("subjectAltName", ())
    names.update(value for kind, value in alt_names if kind == "DNS")
    return names


async def check_relay(tls: TLSInfo, session: Session) -> None:
    # Only certificates signed by the ``ca`` get this far; now check who it is.
    known = certificate_names(tls.peer_certificate) & RELAYS
    if not known:
        raise SMTPError(554, "Error: this certificate may not relay", enhanced="5.7.1")
    session.relay = min(known)  # sessions take attributes of your own


async def relay_data(stream: MessageStream, session: Session) -> None:
    body = await stream.read()
    print(f"{len(body)} bytes relayed by {session.relay}", flush=True)


def relay_server() -> SMTPServer:
    return SMTPServer(
        key="cert/key.pem",
        cert="cert/cert.pem",
        ca="cert/relay-ca.pem",  # the CA that signs the relays' certificates
        request_cert=True,  # ask for a client certificate...
        reject_unauthorized=True,  # ...and fail the handshake without a valid one
        needs_upgrade=True,  # no MAIL before STARTTLS, so no mail without a certificate
        auth_methods=(),  # the certificate replaces AUTH
        on_secure=check_relay,
        on_data=relay_data,
    )


async def note_certificate(tls: TLSInfo, session: Session) -> None:
    session.relay = min(certificate_names(tls.peer_certificate) & RELAYS, default=None)


def optional_certificate_server() -> SMTPServer:
    return SMTPServer(
        key="cert/key.pem",
        cert="cert/cert.pem",
        ca="cert/relay-ca.pem",
        request_cert=True,
        reject_unauthorized=False,  # a certificate is optional (but must be valid if sent)
        auth_optional=True,
        on_secure=note_certificate,
        on_data=relay_data,
    )
