"""The testing page's examples (docs/examples/testing_*.py), run as a user
runs them: each is a test file, run by pytest (``pytester``, in this
process) beside the application it tests, with the plugins that the
installed package registers, and every one of its tests must pass -- counted,
so that a test that silently stops being collected fails here too.

The page itself is checked against the files: every ``literalinclude``
names a file, function or line that exists, every example is shown, and
the aiosmtpd original it ports is valid Python.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from .example_programs import EXAMPLES, ROOT

pytest_plugins = ["pytester"]

PAGE = ROOT / "docs" / "server" / "testing.rst"

# Example -> the number of tests it holds (parametrized ones counted once per
# parameter).
TESTS = {
    "testing_fixture": 4,
    "testing_options": 4,
    "testing_controller": 5,
    "testing_sync": 2,
    "testing_tls": 3,
    "testing_aiosmtpd": 1,
}


@pytest.mark.parametrize("name", sorted(TESTS))
def test_the_example_passes_under_pytest(pytester: pytest.Pytester, name: str) -> None:
    for source in (EXAMPLES / "testing_app.py", EXAMPLES / f"{name}.py"):
        (pytester.path / source.name).write_text(source.read_text(encoding="utf-8"),
                                                 encoding="utf-8")
    result = pytester.runpytest(
        f"{name}.py", "-p", "no:cacheprovider", "--strict-markers",
        "-W", "error::pytest.PytestUnhandledThreadExceptionWarning",
    )
    result.assert_outcomes(passed=TESTS[name])


def _includes() -> list[tuple[str, dict[str, str]]]:
    """Each ``literalinclude`` of the page: its file and its options."""
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    found = []
    for number, line in enumerate(lines):
        match = re.fullmatch(r"\.\. literalinclude:: \.\./examples/(\S+)", line.strip())
        if not match:
            continue
        options = {}
        for option in lines[number + 1:]:
            option_match = re.fullmatch(r"\s+:([\w-]+):\s*(.*)", option)
            if not option_match:
                break
            options[option_match.group(1)] = option_match.group(2)
        found.append((match.group(1), options))
    return found


def test_the_page_includes_what_the_examples_have() -> None:
    includes = _includes()
    assert len(includes) >= len(TESTS) + 1
    for file_name, options in includes:
        path = EXAMPLES / file_name
        assert path.is_file(), file_name
        source = path.read_text(encoding="utf-8")
        if "pyobject" in options:
            names = {node.name for node in ast.parse(source).body
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
            assert options["pyobject"] in names, (file_name, options)
        for key in ("start-at", "end-before"):
            if key in options:
                assert options[key] in source, (file_name, key, options[key])
    shown = {Path(name).stem for name, _ in includes}
    assert shown == {*TESTS, "testing_app"}
    assert {path.stem for path in EXAMPLES.glob("testing_*.py")} == shown


def test_the_aiosmtpd_original_is_python() -> None:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("   import smtplib\n\n   from aiosmtpd.controller import Controller")
    block = text[start:text.index("Ported,", start)]
    code = "\n".join(line[3:] for line in block.splitlines())
    tree = ast.parse(code)
    assert [node.name for node in tree.body if isinstance(node, ast.ClassDef | ast.FunctionDef)
            ] == ["RelayHandler", "test_relaying"]
