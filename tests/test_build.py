"""The compiled core: which build runs, and the install's fall-back to pure
Python (hatch_build.py, smtp_proto._loader).

The suite runs on whichever build is installed; scripts/check.py runs the
core's tests a second time with SMTP_PROTO_PURE=1 when it is the compiled one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import smtp_proto

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(smtp_proto.__file__).resolve().parent
WHICH = ("import json, smtp_proto, sys\n"
         "print(smtp_proto.COMPILED)\n"
         "print(smtp_proto.BUILD)\n"
         "core = [m for n, m in sys.modules.items()\n"
         "        if n.startswith('smtp_proto._') and n != 'smtp_proto._loader']\n"
         "print(json.dumps(sorted({m.__spec__.origin.rpartition('.')[2] for m in core})))\n")
EXTENSION = sysconfig.get_config_var("EXT_SUFFIX")
needs_compiled = pytest.mark.skipif(
    not smtp_proto.COMPILED, reason=f"the installed core is not compiled: {smtp_proto.BUILD}")


def _which(cwd: Path | None = None, **env: str) -> tuple[bool, str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", WHICH], capture_output=True, text=True, check=True, timeout=60,
        cwd=cwd, env={k: v for k, v in dict(os.environ, **env).items() if v},
    )
    compiled, build, suffixes = result.stdout.splitlines()
    return compiled == "True", build, json.loads(suffixes)


def test_smtp_proto_pure_loads_every_module_from_its_source() -> None:
    compiled, build, suffixes = _which(SMTP_PROTO_PURE="1")
    assert not compiled
    assert suffixes == ["py"]
    assert build.startswith("pure Python")


@needs_compiled
def test_the_compiled_build_loads_the_hot_modules_as_machine_code() -> None:
    compiled, build, suffixes = _which(SMTP_PROTO_PURE="")
    assert compiled
    assert build == "compiled with mypyc"
    assert EXTENSION.rpartition(".")[2] in suffixes
    record = json.loads((PACKAGE_DIR / "_build.json").read_text())
    for name in record["modules"]:
        module = importlib.import_module(f"smtp_proto.{name}")
        assert module.__file__ is not None and module.__file__.endswith(EXTENSION), name


@needs_compiled
def test_a_source_edited_after_compiling_runs_from_source(tmp_path: Path) -> None:
    """An editable checkout whose source changed since its install must not
    run the stale machine code."""
    shutil.copytree(PACKAGE_DIR, tmp_path / "smtp_proto",
                    ignore=shutil.ignore_patterns("__pycache__"))
    group = importlib.util.find_spec("smtp_proto__mypyc")
    assert group is not None and group.origin is not None
    shutil.copy2(group.origin, tmp_path)
    assert _which(tmp_path, SMTP_PROTO_PURE="")[0]  # the copy as it is: compiled
    edited = tmp_path / "smtp_proto" / "_replies.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    compiled, build, suffixes = _which(tmp_path, SMTP_PROTO_PURE="")
    assert not compiled
    assert build == "pure Python (_replies.py changed since it was compiled)"
    assert suffixes == ["py"]


@needs_compiled
def test_a_compiled_module_shipped_without_its_source_still_loads(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE_DIR, tmp_path / "smtp_proto",
                    ignore=shutil.ignore_patterns("__pycache__"))
    group = importlib.util.find_spec("smtp_proto__mypyc")
    assert group is not None and group.origin is not None
    shutil.copy2(group.origin, tmp_path)
    (tmp_path / "smtp_proto" / "_replies.py").unlink()
    assert _which(tmp_path, SMTP_PROTO_PURE="")[:2] == (True, "compiled with mypyc")


def test_version_names_the_build() -> None:
    result = subprocess.run([sys.executable, "-m", "smtp_anyio", "--version"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.startswith(f"smtp_anyio {smtp_proto.__version__}, core {smtp_proto.BUILD}")


def _build_wheel(tmp_path: Path, **env: str) -> tuple[Path, str]:
    """Build a wheel from a copy of the project with the hook in this
    interpreter (no build isolation: the test environment has hatchling)."""
    pytest.importorskip("hatchling")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("smtp_proto", "smtp_server", "smtp_anyio", "smtp_sync"):
        shutil.copytree(ROOT / name, project / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "_build.json"))
    for name in ("pyproject.toml", "README.md", "hatch_build.py"):
        shutil.copy2(ROOT / name, project / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(project)],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, **env),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    said = [line.strip() for line in (result.stdout + result.stderr).splitlines()
            if "smtp_proto build:" in line]
    assert len(said) == 1, said
    return wheel, said[0]


@pytest.mark.parametrize(("env", "reason"), [
    ({"CC": "/nonexistent/cc"}, "no C compiler ('/nonexistent/cc' not found)"),
    ({"SMTP_PROTO_PURE": "1"}, "SMTP_PROTO_PURE is set"),
])
def test_without_a_compiler_or_when_asked_the_wheel_is_pure_python(
        tmp_path: Path, env: dict[str, str], reason: str) -> None:
    wheel, said = _build_wheel(tmp_path, **env)
    assert said.endswith(f"smtp_proto build: {reason}: installing pure Python "
                         "(same behaviour, slower)")
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = json.loads(archive.read("smtp_proto/_build.json"))
    assert not [name for name in names if name.endswith(EXTENSION)]
    assert record == {"compiled": False, "reason": reason}
