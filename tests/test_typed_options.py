"""The options are typed (``**options: Unpack[ServerOptions]``): a type
checker run on *user* code, outside this checkout, catches a misspelt
option or a value of the wrong type, on both servers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from smtp_proto import ServerConfig
from smtp_server import HANDLER_NAMES, BackendOptions, ServerOptions, TLSConfig

USER_CODE = '''\
import smtp_sync
from smtp_anyio import SMTPServer, SMTPError

async def on_rcpt_to(address: object, session: object) -> None:
    raise SMTPError(550, "no")

good = SMTPServer(size=1000, auth_optional=True, on_rcpt_to=on_rcpt_to,
                  client_limit_exceptions=["10.0.0.0/8"], command_timeout=None)
typo = SMTPServer(sze=1000)
wrong = smtp_sync.SMTPServer(socket_timeout="60")
'''


def test_the_typed_options_are_exactly_the_options() -> None:
    options = {f.name for cls in (ServerConfig, TLSConfig, BackendOptions)
               for f in fields(cls) if f.init}
    assert set(ServerOptions.__annotations__) == options | set(HANDLER_NAMES)


def mypy_errors(tmp_path: Path, code: str) -> tuple[list[str], str]:
    """``mypy --strict`` on ``code`` as a user's ``user.py`` outside this
    checkout: its error lines, and all it said."""
    (tmp_path / "user.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), "user.py"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )
    return [line for line in result.stdout.splitlines() if ": error:" in line], result.stdout


def test_mypy_catches_a_typo_and_a_wrong_type_in_user_code(tmp_path: Path) -> None:
    errors, said = mypy_errors(tmp_path, USER_CODE)
    assert len(errors) == 2, said
    assert errors[0].startswith("user.py:9:") and 'keyword argument "sze"' in errors[0]
    assert errors[1].startswith("user.py:10:") and '"socket_timeout"' in errors[1]
    assert "expected \"float\"" in errors[1]
