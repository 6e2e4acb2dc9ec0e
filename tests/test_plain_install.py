"""A plain install, no extras, as the docs' "asyncio only" line makes it:
every package imports and the command line answers ``--help``.

The test suite's own environment has every extra (trio brought sniffio
along, for one), so it would hide a missing dependency; this builds a fresh
virtual environment from a copy of the project instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("smtp_proto", "smtp_server", "smtp_anyio", "smtp_sync")


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("plain")
    project = base / "project"
    project.mkdir()
    for name in (*PACKAGES, "pyproject.toml", "README.md", "hatch_build.py"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(project)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def _run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Away from the checkout, so that only the installed packages import.
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120,
                          cwd=python.parent, check=False)


def test_every_package_imports_without_extras(plain_python: Path) -> None:
    code = ("import importlib, sys\n"
            f"for name in {(*PACKAGES, 'smtp_anyio.testing', 'smtp_sync.testing')!r}:\n"
            "    module = importlib.import_module(name)\n"
            "    assert 'site-packages' in module.__file__, module.__file__\n"
            "print('imported')")
    result = _run(plain_python, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_the_command_line_answers_help_without_extras(plain_python: Path) -> None:
    result = _run(plain_python, "-m", "smtp_anyio", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m smtp_anyio" in result.stdout


def test_the_asyncio_server_runs_without_extras(plain_python: Path) -> None:
    """Not just imports: a server on plain asyncio answers a client."""
    code = (
        "import asyncio, smtplib, anyio\n"
        "from smtp_anyio import SMTPServer\n"
        "async def main():\n"
        "    server = SMTPServer(auth_optional=True, disable_reverse_lookup=True)\n"
        "    async with server:\n"
        "        host, port = await server.listen(0)\n"
        "        def client():\n"
        "            with smtplib.SMTP(host, port, timeout=10) as c:\n"
        "                return c.noop()[0]\n"
        "        print(await anyio.to_thread.run_sync(client))\n"
        "        await server.close()\n"
        "anyio.run(main)\n"
    )
    result = _run(plain_python, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "250"


def test_the_install_compiles_the_core_where_a_compiler_is_found(plain_python: Path) -> None:
    """pip install with build isolation, as users run it: hatch_build.py gets
    mypyc from the registry and compiles the core (this machine has cc and
    the Python headers), and the installed build says so."""
    if shutil.which(sysconfig.get_config_var("CC").split()[0]) is None or not (
            Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no C toolchain here: the install is pure Python (tests/test_build.py)")
    result = _run(plain_python, "-c", "import smtp_proto; print(smtp_proto.COMPILED)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    version = _run(plain_python, "-m", "smtp_anyio", "--version")
    assert ", core compiled with mypyc, " in version.stdout
