"""Build hook: compile the protocol core's hot modules with mypyc.

The pure-Python source stays the one source of truth; the compiled modules are
an optimisation built from it at install time. Where that cannot happen (no C
compiler or no Python headers, mypyc failing, or ``SMTP_PROTO_PURE=1`` in the
environment) the install goes on with pure Python and says so in one line. The
outcome is written to ``smtp_proto/_build.json``, which ``smtp_proto._loader``
reads at import time (``smtp_proto.COMPILED``, ``smtp_proto.BUILD``).

Wheels carry the extension modules; editable installs get them in place,
beside the sources (and the loader falls back to the sources the moment one
of them no longer matches what was compiled).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "smtp_proto"
# The per-message path. Left interpreted: __init__ and _loader (they choose
# the build), _session (applications set their own attributes on a Session and
# the backends subclass it; its Envelope is in _envelope, compiled) and
# _config (a frozen dataclass completed in __post_init__, which native classes
# do not allow).
COMPILED_MODULES = (
    "_address", "_commands", "_connection", "_data", "_decisions", "_envelope", "_errors",
    "_events", "_mailparams", "_proxy", "_replies", "_sasl", "_state", "_xclient",
)
GROUP = "smtp_proto"  # the shared library: smtp_proto__mypyc.<abi>.so
RECORD = "_build.json"
BUILD_REQUIRES = ["mypy>=1.10", "setuptools>=68"]

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(name="smtp_proto_compiled", script_args=["build_ext", "--inplace"],
      ext_modules=mypycify(sys.argv[1:], group_name={group!r}, opt_level="3"))
"""


def pure_requested() -> bool:
    return os.environ.get("SMTP_PROTO_PURE", "") not in ("", "0")


def source_digests(package_dir: Path) -> dict[str, str]:
    """What the compiled modules were built from (the loader compares)."""
    return {
        name: hashlib.sha256((package_dir / f"{name}.py").read_bytes()).hexdigest()
        for name in COMPILED_MODULES
    }


def _missing_toolchain() -> str | None:
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    words = shlex.split(compiler)
    if not words or shutil.which(words[0]) is None:
        return f"no C compiler ({compiler!r} not found)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers} not found)"
    return None


def _say(line: str) -> None:
    # pip shows a build's output with -v only; the record keeps the reason
    # (python -m smtp_anyio --version prints it).
    print(f"smtp_proto build: {line}", file=sys.stderr, flush=True)


class MypycBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return [] if pure_requested() else list(BUILD_REQUIRES)

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        editable = version == "editable"
        if editable:
            self._remove_in_place_artifacts(root)
        self._work = Path(tempfile.mkdtemp(prefix="smtp_proto_build_"))
        reason = "SMTP_PROTO_PURE is set" if pure_requested() else _missing_toolchain()
        built: list[Path] = []
        if reason is None:
            try:
                built = self._compile(root)
            except CompileFailed as exc:
                reason = f"mypyc failed: {exc}"
        record: dict[str, Any] = {"compiled": reason is None}
        if reason is None:
            record["modules"] = source_digests(root / PACKAGE)
            _say(f"compiled {len(COMPILED_MODULES)} modules with mypyc")
        else:
            record["reason"] = reason
            _say(f"{reason}: installing pure Python (same behaviour, slower)")
        record_text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        if editable:
            for path in built:
                target = root / path.relative_to(self._work)
                shutil.copy2(path, target)
            (root / PACKAGE / RECORD).write_text(record_text)
            return
        (self._work / RECORD).write_text(record_text)
        build_data["force_include"][str(self._work / RECORD)] = f"{PACKAGE}/{RECORD}"
        for path in built:
            build_data["force_include"][str(path)] = str(path.relative_to(self._work))
        if built:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def _compile(self, root: Path) -> list[Path]:
        """mypyc on a copy of the package, so nothing but the finished
        extension modules ever reaches the source tree."""
        copy = self._work / PACKAGE
        copy.mkdir()
        for source in (root / PACKAGE).glob("*.py"):
            shutil.copy2(source, copy / source.name)
        shutil.copy2(root / PACKAGE / "py.typed", copy / "py.typed")
        paths = [f"{PACKAGE}/{name}.py" for name in COMPILED_MODULES]
        result = subprocess.run(
            [sys.executable, "-c", _SETUP.format(group=GROUP), *paths],
            cwd=self._work, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise CompileFailed(lines[-1] if lines else f"exit status {result.returncode}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = [self._work / f"{GROUP}__mypyc{suffix}"]
        built += [copy / f"{name}{suffix}" for name in COMPILED_MODULES]
        missing = [str(path.name) for path in built if not path.exists()]
        if missing:
            raise CompileFailed(f"not built: {', '.join(missing)}")
        return built

    @staticmethod
    def _remove_in_place_artifacts(root: Path) -> None:
        """An earlier editable build's extension modules would shadow the
        sources whatever this build decides."""
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for path in [root / f"{GROUP}__mypyc{suffix}",
                     *(root / PACKAGE / f"{name}{suffix}" for name in COMPILED_MODULES),
                     root / PACKAGE / RECORD]:
            path.unlink(missing_ok=True)


class CompileFailed(Exception):
    pass
