"""Read a message as it arrives, with the file-like stream: the header block
line by line (to refuse a message before its body), then the body chunk by
chunk into a spool file, so that memory stays flat however big the message.
An aborted message leaves no file behind."""

from __future__ import annotations

from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from smtp_sync import MessageStream, Session, SMTPError, SMTPServer


def read_header(stream: MessageStream) -> bytes:
    """The header block, up to and including the empty line that ends it."""
    lines = []
    while True:
        line = stream.readline()  # CRLF included; b"" at the end of the message
        lines.append(line)
        if line in (b"\r\n", b"\n", b""):
            return b"".join(lines)


def build_server(spool: Path, **options: Any) -> SMTPServer:
    for folder in ("tmp", "new"):
        (spool / folder).mkdir(parents=True, exist_ok=True)

    def on_data(stream: MessageStream, session: Session) -> str:
        header = read_header(stream)
        fields = BytesHeaderParser(policy=policy.default).parsebytes(header)
        if str(fields.get("X-Spam-Flag", "")).upper() == "YES":
            # The server reads and drops the rest, then sends this reply.
            raise SMTPError(550, "Error: message refused as spam", enhanced="5.7.1")
        name = f"{session.id}-{session.transaction}.eml"
        partial = spool / "tmp" / name
        try:
            with partial.open("wb") as spooled:
                spooled.write(header)
                for chunk in stream:  # chunks (not lines) as they arrive
                    spooled.write(chunk)
        except BaseException:  # MessageAbortedError, a full disk...: no half messages
            partial.unlink(missing_ok=True)
            raise
        partial.rename(spool / "new" / name)
        return f"OK: {stream.byte_length} bytes queued as {name}"

    return SMTPServer(on_data=on_data, **options)
