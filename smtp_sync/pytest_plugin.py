"""The pytest plugin of :mod:`smtp_sync`: a ``smtp_sync_server`` fixture.

Installed with the package (entry point ``pytest11``, name ``smtp_sync``),
so a test only asks for the fixture::

    @pytest.mark.smtp_sync_server(size=1000)
    def test_signup_mails_a_welcome(smtp_sync_server):
        app.signup("bob@example.com", smtp=smtp_sync_server.address)
        [message] = smtp_sync_server.wait_for(1)
        assert message.rcpt_to == ("bob@example.com",)

The fixture starts a threaded :class:`~smtp_sync.SMTPServer` on 127.0.0.1
and a free port (:class:`smtp_sync.testing.Controller`) for the test's
duration: it accepts every message, without AUTH, and records it. Options
come from the ``smtp_sync_server_options`` fixture and then from
``@pytest.mark.smtp_sync_server`` markers, the closest winning; ``host``
and ``port`` are the Controller's. Nothing here loads anyio or asyncio.
``-p no:smtp_sync`` leaves the plugin out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from smtp_server import fixture_options

if TYPE_CHECKING:
    from .testing import ServerFixture

__all__ = ["smtp_sync_server", "smtp_sync_server_options"]

MARKER = "smtp_sync_server"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): options of the {MARKER} fixture's server (smtp_sync.SMTPServer's "
        "options and handlers; host, port)",
    )


@pytest.fixture
def smtp_sync_server_options() -> dict[str, Any]:
    """The ``smtp_sync_server`` fixture's options (none): override this
    fixture to give every test in its scope the same ones."""
    return {}


@pytest.fixture
def smtp_sync_server(
    request: pytest.FixtureRequest, smtp_sync_server_options: dict[str, Any],
) -> Iterator[ServerFixture]:
    """A running :class:`~smtp_sync.SMTPServer` that records every message it
    accepts; see :class:`smtp_sync.testing.ServerFixture`."""
    # Imported here: a session that never asks for the fixture starts no
    # thread and loads nothing more than the package.
    from .testing import Controller, MessageLog, ServerFixture  # noqa: PLC0415

    log = MessageLog()
    defaults = {"auth_optional": True, "disable_reverse_lookup": True, "on_data": log}
    options: Any = fixture_options(MARKER, defaults, smtp_sync_server_options,
                                   request.node.iter_markers(MARKER))
    with Controller(**options) as controller:
        yield ServerFixture(controller, log)
