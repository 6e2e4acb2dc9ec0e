"""Which build of the core runs: the mypyc-compiled modules or their sources.

Imported first by the package, before any other module of it. The install
(``hatch_build.py``) records in ``_build.json`` whether it compiled the hot
modules and from which sources. The compiled modules are used when that
record says so, ``SMTP_PROTO_PURE`` is not set, and every source still
matches what was compiled (an editable checkout edited since its install
runs its sources rather than stale machine code). Otherwise a finder in
front of the import system loads this package's modules from their ``.py``
files even where extension modules sit beside them.

This is the one module of the core that looks at the environment; it runs
once, at import, and never takes part in the protocol.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = ["BUILD", "COMPILED_WANTED", "is_compiled"]

_HERE = Path(__file__).resolve().parent
_PACKAGE = __name__.rpartition(".")[0]


class _SourceFinder(MetaPathFinder):
    """Loads ``smtp_proto._x`` from ``_x.py`` whatever else is beside it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE:
            return None
        source = _HERE / f"{name}.py"
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _choose() -> tuple[bool, str]:
    """(use the compiled modules?, why: a line for --version)."""
    try:
        record = json.loads((_HERE / "_build.json").read_text())
    except (OSError, ValueError):
        return False, "pure Python (not installed by a build: a source tree)"
    if not record.get("compiled"):
        return False, f"pure Python ({record.get('reason', 'not compiled')})"
    if os.environ.get("SMTP_PROTO_PURE", "") not in ("", "0"):
        return False, "pure Python (SMTP_PROTO_PURE is set)"
    for name, digest in dict(record.get("modules", {})).items():
        if not any((_HERE / f"{name}{suffix}").exists() for suffix in EXTENSION_SUFFIXES):
            return False, f"pure Python (the compiled {name} is missing)"
        try:
            source = (_HERE / f"{name}.py").read_bytes()
        except OSError:
            continue  # shipped without its source: the machine code is all there is
        if hashlib.sha256(source).hexdigest() != digest:
            return False, f"pure Python ({name}.py changed since it was compiled)"
    return True, "compiled with mypyc"


def _machine_code_present() -> bool:
    return any(any(_HERE.glob(f"_*{suffix}")) for suffix in EXTENSION_SUFFIXES)


COMPILED_WANTED, BUILD = _choose()
if (not COMPILED_WANTED and _machine_code_present()
        and not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path)):
    sys.meta_path.insert(0, _SourceFinder())


def is_compiled(module: ModuleType) -> bool:
    """Was this module loaded from machine code?"""
    spec = module.__spec__
    return spec is not None and isinstance(spec.loader, ExtensionFileLoader)
