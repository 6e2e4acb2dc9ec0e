"""The compiled-core page's example (docs/examples/core_build.py): both
builds give the same replies and events, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "core_build.py"


def _run(pure: bool) -> list[str]:
    env = dict(os.environ, SMTP_PROTO_PURE="1" if pure else "")
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=60, check=True, env=env)
    return result.stdout.splitlines()


def test_both_builds_answer_the_example_conversation_alike() -> None:
    compiled, pure = _run(pure=False), _run(pure=True)
    assert pure[0] == "core: pure Python (SMTP_PROTO_PURE is set) (COMPILED=False)"
    assert compiled[0].startswith("core: ")
    assert compiled[1:] == pure[1:]
    assert "S: b'250 2.0.0 OK: message queued\\r\\n'" in pure
    assert pure[-1] == "S: b'221 2.0.0 Bye\\r\\n'"


def test_the_page_shows_the_example() -> None:
    page = (ROOT / "docs" / "core" / "compiled.rst").read_text()
    assert ".. literalinclude:: ../examples/core_build.py" in page
