"""Stream each message to a file as it arrives: memory stays flat however
big the message, and an aborted message leaves nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from smtp_anyio import MessageStream, Session, SMTPServer


class SpoolServer(SMTPServer):
    def __init__(self, spool: Path, **options: Any) -> None:
        super().__init__(**options)
        self.spool = anyio.Path(spool)

    async def on_data(self, stream: MessageStream, session: Session) -> str:
        name = f"{session.id}-{session.transaction}.eml"
        partial = self.spool / "tmp" / name
        try:
            async with await anyio.open_file(partial, "wb") as spooled:
                async for chunk in stream:  # the client waits while we write
                    await spooled.write(chunk)
        except BaseException:
            # MessageAbortedError (too big, RSET, connection lost...), a full
            # disk, cancellation: remove the partial file, shielded from the
            # cancellation that follows a lost connection.
            with anyio.CancelScope(shield=True):
                await partial.unlink(missing_ok=True)
            raise
        await partial.rename(self.spool / "new" / name)
        return f"OK: {stream.byte_length} bytes queued as {name}"


def build_server(spool: Path) -> SpoolServer:
    for folder in ("tmp", "new"):
        (spool / folder).mkdir(parents=True, exist_ok=True)
    return SpoolServer(spool, size=10 * 1024 * 1024, auth_optional=True)
