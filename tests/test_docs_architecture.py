"""The architecture page's example: a backend from ``smtp_proto`` and
``smtp_server`` alone, run for real with smtplib."""

from __future__ import annotations

import smtplib

from .example_programs import ROOT, Program, example


def test_a_backend_built_on_the_layer_answers_like_the_servers() -> None:
    with Program(example("layer_backend", "--port", "0", "--clients", "1")) as program:
        port = program.port()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            code, text = client.ehlo("client.example")
            assert code == 250 and b"STARTTLS" not in text  # no certificate, not offered
            assert client.mail("alice@example.org")[0] == 250
            # The layer turns the handler's SMTPError into the reply.
            assert client.rcpt("nobody@example.com") == (550, b"5.1.1 No such user here")
            assert client.rcpt("bob@example.com")[0] == 250
            assert client.data(b"Subject: hi\r\n\r\nhello\r\n") == (250, b"2.0.0 Stored")
        assert program.wait_for(r"^message of 22 bytes for bob@example.com$")
        assert program.exit_status() == 0


def test_the_page_includes_the_example_from_its_class_on() -> None:
    page = (ROOT / "docs" / "architecture.rst").read_text()
    source = (ROOT / "docs" / "examples" / "layer_backend.py").read_text()
    assert ":start-at: class OneAtATime" in page and "\nclass OneAtATime(" in source
