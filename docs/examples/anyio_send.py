"""Send a test message with the standard library's smtplib.

    python docs/examples/anyio_send.py          # to 127.0.0.1:2525
    python docs/examples/anyio_send.py 2526     # to another port
"""

from __future__ import annotations

import smtplib
import sys
from email.message import EmailMessage


def send(port: int = 2525, host: str = "127.0.0.1") -> None:
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "bob@example.com"
    message["Subject"] = "Hello from smtplib"
    message.set_content("It works!\n")
    with smtplib.SMTP(host, port) as client:
        client.send_message(message)


if __name__ == "__main__":
    send(int(sys.argv[1]) if len(sys.argv) > 1 else 2525)
