"""The application the testing page's tests test: a shop that mails its
customers. It knows nothing of the tests: it is given an SMTP server's
address, as it would be in production."""

from __future__ import annotations

import smtplib
import threading
from email.message import EmailMessage


def welcome(address: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "shop@shop.example"
    message["To"] = address
    message["Subject"] = "Welcome to the shop"
    message.set_content("Your account is ready.\n")
    return message


def send_welcome(address: str, smtp: tuple[str, int]) -> None:
    """Mail the welcome now; an SMTP error (a refused address) is raised."""
    with smtplib.SMTP(*smtp, timeout=30) as client:
        client.send_message(welcome(address))


def send_welcome_later(address: str, smtp: tuple[str, int]) -> threading.Thread:
    """Mail the welcome in the background, as a task queue would."""
    worker = threading.Thread(target=send_welcome, args=(address, smtp), daemon=True)
    worker.start()
    return worker
