"""Limits per client address and per command: what bounds an attacker who
reconnects, or who holds a command open one byte at a time.

Both backends keep the time (``now`` is their monotonic clock) and the
sockets; what is counted and when a limit is reached is decided here, once.
A client is its address after PROXY and XCLIENT (the address the session
shows). Addresses in ``client_limit_exceptions`` (loopback by default, as
Postfix exempts ``$mynetworks``) are not counted, limited or delayed.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable

from smtp_proto import Event, ServerConnection

from ._dispatch import Outcome, failed_auth

__all__ = [
    "AUTH_BLOCKED", "MAX_AUTH_DELAY", "MAX_TRACKED_CLIENTS", "TOO_MANY_CONNECTIONS",
    "ClientLimits", "ClientSlot", "CommandDeadline",
]

MAX_TRACKED_CLIENTS = 100_000
"""Addresses whose AUTH failures are remembered; the oldest are forgotten
first, so an attacker with many addresses cannot grow the table."""
MAX_AUTH_DELAY = 10.0
"""The longest pause before a failed AUTH's reply."""

TOO_MANY_CONNECTIONS = "Too many connections from your address"
"""The text of the 421 4.7.0 for a client over ``max_connections_per_client``."""
AUTH_BLOCKED = (421, "Too many failed authentications from your address, try again later",
                "4.7.0")
"""The reply to AUTH from a client over ``max_auth_failures_per_client``."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientLimits:
    """Open connections and recent AUTH failures per client address.
    Thread-safe: the threaded server calls it from every connection's
    thread."""

    def __init__(
        self, *, max_connections: int | None, max_auth_failures: int | None,
        auth_failure_window: float, exceptions: Iterable[str],
    ) -> None:
        self.max_connections = max_connections
        self.max_auth_failures = max_auth_failures
        self.window = auth_failure_window
        self._exempt: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(net, strict=False) for net in exceptions)
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def exempt(self, address: str | None) -> bool:
        """Not limited: no address (a Unix socket, a test), or listed."""
        if address is None:
            return True
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False  # an XCLIENT name such as [UNAVAILABLE]: limited
        return any(ip in net for net in self._exempt)

    # -- connections ---------------------------------------------------------

    def connect(self, address: str | None) -> bool:
        """Count a connection from ``address``; False (and not counted) if
        that client already has ``max_connections`` open."""
        if self.max_connections is None or self.exempt(address):
            return True
        assert address is not None
        with self._lock:
            count = self._open.get(address, 0)
            if count >= self.max_connections:
                return False
            self._open[address] = count + 1
            return True

    def disconnect(self, address: str | None) -> None:
        """The connection counted by :meth:`connect` ended."""
        if self.max_connections is None or self.exempt(address):
            return
        assert address is not None
        with self._lock:
            count = self._open.get(address, 0) - 1
            if count > 0:
                self._open[address] = count
            else:
                self._open.pop(address, None)

    # -- AUTH failures --------------------------------------------------------

    def auth_failed(self, address: str | None, now: float) -> None:
        if self.max_auth_failures is None or self.exempt(address):
            return
        assert address is not None
        with self._lock:
            times = self._failures.pop(address, None)
            if times is None:
                times = deque(maxlen=self.max_auth_failures + 1)
            times.append(now)
            self._failures[address] = times  # most recent last
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)

    def auth_blocked(self, address: str | None, now: float) -> bool:
        """``max_auth_failures`` failures from this client within the window."""
        if self.max_auth_failures is None or self.exempt(address):
            return False
        assert address is not None
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return False
            while times and now - times[0] > self.window:
                times.popleft()
            if not times:
                del self._failures[address]
                return False
            return len(times) >= self.max_auth_failures

    def auth_delay(self, address: str | None, base: float, failures: int) -> float:
        """The pause before the reply to a session's ``failures``-th failed
        AUTH: ``base``, doubling with each failure, at most MAX_AUTH_DELAY."""
        if base <= 0 or failures <= 0 or self.exempt(address):
            return 0.0
        return float(min(base * 2 ** (failures - 1), MAX_AUTH_DELAY))


class ClientSlot:
    """One connection's place in its client's count (it moves with XCLIENT)
    and its failed AUTHs: what both servers' connections do about the
    per-client limits, written once."""

    __slots__ = ("_limits", "address", "auth_failures", "held")

    def __init__(self, limits: ClientLimits) -> None:
        self._limits = limits
        self.address: str | None = None
        self.held = False
        self.auth_failures = 0
        """Failed AUTHs of this connection (what the reply delay grows with)."""

    def admit(self, conn: ServerConnection, log: logging.Logger, via: str = "") -> bool:
        """Count ``conn`` for its client (the session's address, after PROXY
        or XCLIENT); if that client is at its limit, queue ``421 4.7.0`` on
        ``conn`` (which closes it), log it, and return False."""
        session = conn.session
        if self.take(session.remote_address):
            return True
        log.info("[%s] too many connections from %s%s", session.id, session.remote_address, via)
        conn.shutdown(TOO_MANY_CONNECTIONS, 421, "4.7.0")
        return False

    def refuse_auth(self, conn: ServerConnection, log: logging.Logger, now: float) -> bool:
        """With an AUTH pending: if this client has used up its failures,
        answer it ``421 4.7.0`` (which closes the connection) and return True."""
        if not self._limits.auth_blocked(self.address, now):
            return False
        log.info("[%s] AUTH refused: too many failures from %s", conn.session.id, self.address)
        conn.reject(*AUTH_BLOCKED)
        return True

    def auth_pause(self, event: Event, outcome: Outcome, now: float, base_delay: float) -> float:
        """After a handler decided ``event``: if it refused a login, count
        the failure (here and for the client) and return the seconds to hold
        the reply; else 0."""
        if not failed_auth(event, outcome):
            return 0.0
        self.auth_failures += 1
        self._limits.auth_failed(self.address, now)
        return self._limits.auth_delay(self.address, base_delay, self.auth_failures)

    def take(self, address: str | None) -> bool:
        """Count this connection for ``address``; False if that client is
        at its limit (then nothing is held)."""
        self.release()
        if not self._limits.connect(address):
            return False
        self.address, self.held = address, True
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._limits.disconnect(self.address)


class CommandDeadline:
    """The whole-command deadline of one connection (a Postfix-style
    per-record deadline): a command line must arrive whole within
    ``timeout`` seconds of its first byte, and a message body within
    ``timeout`` plus one second per ``min_rate`` bytes received. The
    backend tells it when bytes arrive and when the core is between
    commands; it answers when time is up. ``timeout=None`` switches it off."""

    __slots__ = ("min_rate", "received", "started", "timeout")

    def __init__(self, timeout: float | None, min_rate: float) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.started: float | None = None
        self.received = 0

    def fed(self, now: float, size: int) -> None:
        """``size`` bytes arrived (before they go to the core)."""
        if self.started is None:
            if self.timeout is None:
                return
            self.started = now
            self.received = 0
        self.received += size

    def settled(self, receiving: bool) -> None:
        """After the core consumed what it could: ``receiving`` is
        ``ServerConnection.receiving`` (a command or body under way)."""
        if not receiving:
            self.started = None

    def restart(self, now: float) -> None:
        """We, not the client, held things up (a handler deciding, a slow
        ``on_data``): the time so far does not count against it."""
        if self.started is not None:
            self.started = now

    def credit(self, seconds: float) -> None:
        """Like :meth:`restart`, keeping the client's own time so far:
        ``seconds`` were ours (a handler reading between two reads)."""
        if self.started is not None:
            self.started += seconds

    def expires(self) -> float | None:
        """When the command under way runs out of time (None: none is)."""
        if self.started is None or self.timeout is None:
            return None
        return self.started + self.timeout + self.received / self.min_rate
