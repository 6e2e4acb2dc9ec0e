"""What an accept loop does when the system runs out of descriptors.

``accept()`` fails with EMFILE (this process's descriptor limit), ENFILE
(the system's), ENOBUFS or ENOMEM. None of those is the listener's fault,
and retrying at once fails again: a loop that retries spins at 100 % CPU,
one that logs every failure floods the log, and one that lets the error
escape ends the server and every session in it. The policy, shared by every
accept loop of both backends: stop accepting for a moment (0.1 s, doubling
up to 1 s while it lasts), say so once per episode, keep serving the open
sessions, and resume as soon as an accept works again. Meanwhile new
clients wait in the listener's backlog.
"""

from __future__ import annotations

import errno
import logging

__all__ = ["RESOURCE_ERRNOS", "AcceptBackoff"]

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_DELAY = 0.1
MAX_DELAY = 1.0


class AcceptBackoff:
    """One per accept loop: how long to pause after a failed ``accept()``."""

    __slots__ = ("_delay", "_failures", "_logger", "_name")

    def __init__(self, logger: logging.Logger, name: str) -> None:
        self._logger = logger
        self._name = name
        self._delay = 0.0
        self._failures = 0

    def failed(self, exc: OSError) -> float:
        """Seconds to stop accepting after ``exc``; logs the first failure
        of an episode only. Errors other than running out of a resource
        (a connection reset before it was accepted, say) cost no pause."""
        if exc.errno not in RESOURCE_ERRNOS:
            self._logger.debug("accept on %s failed: %r", self._name, exc)
            return 0.0
        self._failures += 1
        if self._failures == 1:
            self._logger.warning(
                "accept on %s: %s; not accepting for a moment (open sessions go on)",
                self._name, errno.errorcode.get(exc.errno or 0, exc.strerror))
            self._delay = FIRST_DELAY
        else:
            self._delay = min(self._delay * 2, MAX_DELAY)
        return self._delay

    def succeeded(self) -> None:
        """An accept worked: the episode, if any, is over."""
        if self._failures:
            self._logger.warning("accept on %s works again after %d failed attempts",
                                 self._name, self._failures)
            self._failures = 0
            self._delay = 0.0
