"""The whole test suite, as CI runs it: pytest, mypy --strict, ruff, a short
fuzz run and the docs build with warnings as errors. Exits non-zero on the
first failing step's status after running them all."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PACKAGES = ["smtp_proto", "smtp_server", "smtp_anyio", "smtp_sync"]


def step(name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    shown = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    print(f"\n=== {name}: {shown + ' ' if shown else ''}{' '.join(cmd)}", flush=True)
    started = time.monotonic()
    status = subprocess.call(cmd, cwd=ROOT, env=dict(os.environ, **env) if env else None)
    print(f"=== {name}: {'ok' if status == 0 else f'FAILED ({status})'} "
          f"in {time.monotonic() - started:.1f}s", flush=True)
    return status


def main() -> int:
    fuzz_seconds = os.environ.get("FUZZ_SECONDS", "30")
    workers = os.environ.get("PYTEST_WORKERS", "2")
    which = "import smtp_proto; print(smtp_proto.COMPILED, smtp_proto.BUILD)"
    compiled_text, build = subprocess.run([PY, "-c", which], cwd=ROOT, capture_output=True,
                                          text=True, check=True).stdout.strip().split(" ", 1)
    compiled = compiled_text == "True"
    print(f"=== core: {build}", flush=True)
    results = {
        "ruff": step("ruff", [PY, "-m", "ruff", "check", "."]),
        "mypy": step("mypy", [PY, "-m", "mypy", "--strict", *PACKAGES]),
        "pytest": step(
            "pytest", [PY, "-m", "pytest", "-q", "-n", workers, "-p", "no:cacheprovider"]
        ),
    }
    # The whole suite ran on the build installed (compiled where a C compiler
    # was found); the core's own tests, hypothesis properties included, run
    # again on its pure-Python source: the two builds must behave the same.
    if compiled:
        results["pytest-pure-core"] = step(
            "pytest-pure-core",
            [PY, "-m", "pytest", "-q", "-n", workers, "-p", "no:cacheprovider", "tests/proto",
             "tests/test_fuzz_corpus.py"],
            env={"SMTP_PROTO_PURE": "1"},
        )
    else:
        print("\n=== pytest-pure-core: skipped (the installed core is already pure Python)")
    if importlib.util.find_spec("atheris") is not None:
        results["fuzz"] = step("fuzz", [PY, "fuzz/fuzz_core.py", "--seconds", fuzz_seconds])
    else:
        print("\n=== fuzz: skipped (atheris is not installed)")
    results["docs"] = step(
        "docs", [PY, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs",
                 "docs/_build/html"],
    )
    failed = [name for name, status in results.items() if status]
    print("\n=== summary:", "all passed" if not failed else "FAILED: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
