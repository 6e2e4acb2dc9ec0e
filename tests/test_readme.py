"""The README: its two commands and its Python samples stay well-formed."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_opens_with_the_two_commands() -> None:
    run, test = _blocks("sh")[:2]
    assert run.strip().endswith("-m smtp_anyio")
    assert test.strip().endswith("scripts/check.py")
    for command in (run, test):
        assert command.count("\n") == 1  # one line each
        assert command.startswith("python3 -m venv .venv && ")


def test_python_samples_compile() -> None:
    samples = _blocks("python")
    assert samples
    for sample in samples:
        compile(sample, "README.md", "exec")
