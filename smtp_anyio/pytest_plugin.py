"""The pytest plugin of :mod:`smtp_anyio`: a ``smtp_server`` fixture.

Installed with the package (entry point ``pytest11``, name ``smtp_anyio``),
so a test only asks for the fixture::

    @pytest.mark.smtp_server(size=1000)
    def test_signup_mails_a_welcome(smtp_server):
        app.signup("bob@example.com", smtp=smtp_server.address)
        [message] = smtp_server.wait_for(1)
        assert message.rcpt_to == ("bob@example.com",)

The fixture starts an :class:`~smtp_anyio.SMTPServer` on 127.0.0.1 and a
free port, in a thread of its own (:class:`smtp_anyio.testing.Controller`),
for the test's duration: it accepts every message, without AUTH, and
records it. Options come from the ``smtp_server_options`` fixture (override
it for a module or a directory) and then from ``@pytest.mark.smtp_server``
markers, the closest winning; ``backend``, ``host`` and ``port`` are the
Controller's. ``-p no:smtp_anyio`` leaves the plugin out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from smtp_server import fixture_options

if TYPE_CHECKING:
    from .testing import ServerFixture

__all__ = ["smtp_server", "smtp_server_options"]

MARKER = "smtp_server"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): options of the {MARKER} fixture's server (SMTPServer's options "
        "and handlers; backend='asyncio'|'uvloop'|'trio', host, port)",
    )


@pytest.fixture
def smtp_server_options() -> dict[str, Any]:
    """The ``smtp_server`` fixture's options (none): override this fixture to
    give every test in its scope the same ones."""
    return {}


@pytest.fixture
def smtp_server(
    request: pytest.FixtureRequest, smtp_server_options: dict[str, Any],
) -> Iterator[ServerFixture]:
    """A running :class:`~smtp_anyio.SMTPServer` that records every message
    it accepts; see :class:`smtp_anyio.testing.ServerFixture`."""
    # Imported here: a session that never asks for the fixture starts no
    # thread and loads nothing more than the package.
    from .testing import Controller, MessageLog, ServerFixture  # noqa: PLC0415

    log = MessageLog()
    defaults = {"auth_optional": True, "disable_reverse_lookup": True, "on_data": log}
    options: Any = fixture_options(MARKER, defaults, smtp_server_options,
                                   request.node.iter_markers(MARKER))
    with Controller(**options) as controller:
        yield ServerFixture(controller, log)
