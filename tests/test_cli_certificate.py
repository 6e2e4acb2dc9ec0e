"""``--tls-self-signed``: the throw-away certificate carries what strict
validators require of a server certificate (basicConstraints, keyUsage,
extendedKeyUsage serverAuth, key identifiers), whichever way it is made,
and a client verifying strictly (``VERIFY_X509_STRICT``) accepts it."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from smtp_anyio import _cli


def _strict_handshake(cert: str, key: str) -> str:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=cert)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(listener.getsockname()) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as tls:
            version = str(tls.version())
        thread.join(10)
    return version


def _check(cert: str, key: str) -> None:
    certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    extensions = certificate.extensions
    basic = extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert basic.critical and basic.value.ca is False  # type: ignore[attr-defined]
    usage = extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    assert usage.digital_signature and not usage.key_cert_sign  # type: ignore[attr-defined]
    eku = extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku  # type: ignore[operator]
    extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    assert _strict_handshake(cert, key).startswith("TLSv1.")


def test_made_with_cryptography(tmp_path: Path) -> None:
    _check(*_cli.self_signed(tmp_path))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_made_with_the_openssl_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cryptography(cert: Path, key: Path) -> None:
        raise ImportError("cryptography")

    monkeypatch.setattr(_cli, "_self_signed_cryptography", no_cryptography)
    _check(*_cli.self_signed(tmp_path))
