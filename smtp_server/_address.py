"""Socket addresses as the session shows them."""

from __future__ import annotations

__all__ = ["normalise_address"]


def normalise_address(addr: object) -> tuple[str, int] | None:
    """``(host, port)`` from a socket address; IPv4-mapped IPv6 unwrapped
    (a dual-stack listener reports ``::ffff:192.0.2.1`` for an IPv4 client,
    which PROXY, XCLIENT and per-client limits must see as ``192.0.2.1``)."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(addr[1])
