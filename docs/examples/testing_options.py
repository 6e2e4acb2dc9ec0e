"""The same options for every test of a module (or, in a conftest.py, of a
directory): the ``smtp_server_options`` fixture, here run on each event
loop in turn."""

from __future__ import annotations

from typing import Any

import pytest
from testing_app import send_welcome

from smtp_anyio.testing import ServerFixture


@pytest.fixture(params=["asyncio", "trio"])
def smtp_server_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"backend": request.param, "name": "mx.test", "hide_smtputf8": True}


def test_welcome_on_every_event_loop(smtp_server: ServerFixture) -> None:
    send_welcome("bob@example.com", smtp=smtp_server.address)
    assert smtp_server.messages[0].rcpt_to == ("bob@example.com",)
    assert smtp_server.server.protocol_config.name == "mx.test"


@pytest.mark.smtp_server(name="other.test")  # a marker overrides the fixture
def test_a_marker_wins(smtp_server: ServerFixture) -> None:
    assert smtp_server.server.protocol_config.name == "other.test"
