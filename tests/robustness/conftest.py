"""The server conformance suite's fixtures, for the robustness tests that
run servers in this process."""

from tests.server.conftest import backend, inbox, start_server, tls  # noqa: F401
