"""``--relay``: forward every message to an existing MTA before answering.

Each client transaction is mirrored on a connection of its own to the relay
(aiosmtplib, asyncio only): MAIL FROM is sent on when our client sends it,
each RCPT TO likewise, and the relay's answer is ours. So a recipient the
relay refuses is refused to our client at RCPT time, and the message is
answered only once the relay has answered its DATA: a 250 from us means
the relay has taken responsibility for the message. A relay that cannot be
reached, or drops the connection, makes us answer ``451 4.4.1``: the client
keeps the message and tries again later, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from smtp_proto import MailFrom, RcptTo, Session
from smtp_server import ServerOptions, SMTPError

from ._cli_servers import CliServer, _print_line
from ._delivery import trace_headers
from ._maildir import describe
from ._stream import MessageStream

if TYPE_CHECKING:
    import aiosmtplib

__all__ = ["RELAY_TIMEOUT", "RelayServer", "RelayTarget"]

log = logging.getLogger("smtp_anyio.cli")

RELAY_TIMEOUT = 60.0
"""Seconds the relay gets to answer each command (its DATA included)."""

_UNAVAILABLE = (451, "Error: relay unavailable, try again later", "4.4.1")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\s+")
T = TypeVar("T")


@dataclass(frozen=True)
class RelayTarget:
    """Where ``--relay`` sends: ``host``/``port``, or a Unix socket ``path``."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def _relayed_error(exc: BaseException) -> SMTPError:
    """Our reply for what the relay said (or did): its own 4xx/5xx, with its
    enhanced code when it gave one; anything else (no connection, a drop, a
    timeout, a 421) is 451 4.4.1."""
    import aiosmtplib  # noqa: PLC0415 - the relay's extra

    if (isinstance(exc, aiosmtplib.SMTPResponseException) and 400 <= exc.code < 600
            and exc.code != 421):
        text = (exc.message.splitlines() or [""])[0][:200]
        found = _ENHANCED.match(text)
        enhanced = None
        if found and found.group(1) == str(exc.code)[0]:
            enhanced = ".".join(found.groups())
            text = text[found.end():]
        text = "".join(c if " " <= c <= "~" else "?" for c in text) or "refused"
        return SMTPError(exc.code, f"relay: {text}",
                         enhanced=enhanced or f"{str(exc.code)[0]}.0.0")
    log.warning("relay: %r", exc)
    return SMTPError(*_UNAVAILABLE[:2], enhanced=_UNAVAILABLE[2])


class _Upstream:
    """Our connection to the relay for one client session."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.in_transaction = False


class RelayServer(CliServer):
    """The command line's server with ``--relay``: see the module's text."""

    def __init__(self, target: RelayTarget, users: dict[str, str] | None, *,
                 say: Callable[[str], None] = _print_line, timeout: float = RELAY_TIMEOUT,
                 **options: Unpack[ServerOptions]) -> None:
        super().__init__(users, say=say, **options)
        self.target = target
        self.timeout = timeout
        self._upstreams: dict[str, _Upstream] = {}

    async def _call(self, upstream: _Upstream, call: Awaitable[T]) -> T:
        """A relay command; any failure becomes our reply (and a connection
        that failed is dropped, the next transaction opens a new one)."""
        import aiosmtplib  # noqa: PLC0415

        try:
            return await call
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or not upstream.client.is_connected:
                await self._drop(upstream)
            raise _relayed_error(exc) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._drop(upstream)
            raise _relayed_error(exc) from None

    async def _upstream(self, session: Session) -> _Upstream:
        import aiosmtplib  # noqa: PLC0415

        upstream = self._upstreams.get(session.id)
        if upstream is not None and upstream.client.is_connected:
            if upstream.in_transaction:  # our client said RSET, or a MAIL failed
                await self._call(upstream, upstream.client.rset())
                upstream.in_transaction = False
            return upstream
        target = self.target
        client = aiosmtplib.SMTP(hostname=target.host, port=target.port,
                                 socket_path=target.path, timeout=self.timeout,
                                 local_hostname=self.by, start_tls=False)
        upstream = _Upstream(client)
        await self._call(upstream, client.connect())
        self._upstreams[session.id] = upstream
        return upstream

    async def _drop(self, upstream: _Upstream) -> None:
        for key, value in list(self._upstreams.items()):
            if value is upstream:
                del self._upstreams[key]
        upstream.client.close()

    async def on_mail_from(self, address: MailFrom, session: Session) -> None:
        upstream = await self._upstream(session)
        client = upstream.client
        options = []
        if address.smtputf8 and client.supports_extension("smtputf8"):
            options.append("SMTPUTF8")
        if address.body and client.supports_extension("8bitmime"):
            options.append(f"BODY={address.body}")
        if address.size is not None and client.supports_extension("size"):
            options.append(f"SIZE={address.size}")
        encoding = "utf-8" if address.smtputf8 else "ascii"
        upstream.in_transaction = True
        await self._call(upstream, client.mail(address.address, options=options,
                                               encoding=encoding))

    async def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        upstream = self._upstreams.get(session.id)
        if upstream is None:  # the relay dropped us after MAIL
            raise SMTPError(*_UNAVAILABLE[:2], enhanced=_UNAVAILABLE[2])
        encoding = "utf-8" if session.envelope.smtputf8 else "ascii"
        await self._call(upstream, upstream.client.rcpt(address.address, encoding=encoding))

    async def on_data(self, stream: MessageStream, session: Session) -> object:
        """The whole message (at most ``size``), our ``Received`` line in
        front, to the relay; its answer is ours."""
        upstream = self._upstreams.get(session.id)
        body = await stream.read()
        if upstream is None:
            raise SMTPError(*_UNAVAILABLE[:2], enhanced=_UNAVAILABLE[2])
        message = trace_headers(session, by=self.by, delivered_to=None, relay=True) + body
        response: Any = await self._call(upstream, upstream.client.data(message))
        upstream.in_transaction = False
        self.say(f"relayed {describe(session, len(body))} relay={self.target} "
                 f"reply={response.code}")
        text = (response.message.splitlines() or [""])[0][:200]
        reply = f"OK: relayed ({''.join(c if ' ' <= c <= '~' else '?' for c in text)})"
        if self.protocol_config.lmtp:
            return [reply] * len(session.envelope.rcpt_to)
        return reply

    async def on_close(self, session: Session) -> None:
        upstream = self._upstreams.pop(session.id, None)
        if upstream is None:
            return
        client = upstream.client
        if client.is_connected:
            with contextlib.suppress(Exception):  # it is going away either way
                await client.quit(timeout=5)
        client.close()
