"""Replay the fuzz seed corpus through the fuzz harness, without atheris.

``fuzz/harness.py`` is pure Python: every file of ``fuzz/corpus/`` drives a
connection with all the harness's invariants checked, exactly as libFuzzer
runs it (``PurePythonFDP`` reads the input as ``atheris.FuzzedDataProvider``
does; the last test checks that when atheris is installed).

``fuzz/crashes/`` holds reproducers of bugs the fuzzer found in smtp_proto.
Those still open are expected to fail (strict xfail: once fixed, move the
entry out of ``OPEN_BUGS`` and the file keeps guarding the fix).
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


def _load_harness() -> ModuleType:
    # harness.py imports its sibling modules (fuzz_input, fuzz_replies, ...)
    # by their top-level names, as it does when run as a script. Appended,
    # not prepended: nothing in fuzz/ may shadow another module.
    if str(FUZZ) not in sys.path:
        sys.path.append(str(FUZZ))
    # A unique module name: tests/server has a harness.py of its own.
    spec = importlib.util.spec_from_file_location("smtp_proto_fuzz_harness", FUZZ / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

SEEDS = sorted((FUZZ / "corpus").iterdir())
CRASHES = sorted((FUZZ / "crashes").iterdir()) if (FUZZ / "crashes").is_dir() else []

# Reproducers of bugs not fixed yet: file name -> (exception raised, bug). The
# four bugs found so far are fixed (bf5767c, 95a9887): their files now guard
# the fixes like seeds. Example entry:
#     "message-aborted-after-message-complete-shutdown": (
#         harness.InvariantError, "shutdown() during MessageComplete ends the message twice"),
OPEN_BUGS: dict[str, tuple[type[BaseException], str]] = {}


def test_there_is_a_seed_corpus() -> None:
    assert len(SEEDS) >= 20


@pytest.mark.parametrize("path", SEEDS, ids=[p.name for p in SEEDS])
def test_seed(path: Path) -> None:
    harness.one_input(path.read_bytes())


def _crash_params() -> list[object]:
    params: list[object] = []
    for path in CRASHES:
        bug = OPEN_BUGS.get(path.name)
        marks = () if bug is None else pytest.mark.xfail(raises=bug[0], strict=True, reason=bug[1])
        params.append(pytest.param(path, marks=marks, id=path.name))
    return params


@pytest.mark.parametrize("path", _crash_params())
def test_crash_reproducer(path: Path) -> None:
    harness.one_input(path.read_bytes())


def test_open_bugs_have_reproducers() -> None:
    assert set(OPEN_BUGS) <= {p.name for p in CRASHES}


def test_corpus_matches_its_generator() -> None:
    """fuzz/corpus/ is what fuzz/make_corpus.py builds (the format is documented there)."""
    result = subprocess.run(
        [sys.executable, str(FUZZ / "make_corpus.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_markers_round_trip() -> None:
    steps = [("data", b"EHLO x\r\n\xff"), ("split", b""), ("data", b"QUIT\r\n"),
             ("eof", b""), ("data", b"late")]
    data = harness.encode_input(steps, decisions=[1, 2, 3], lmtp=1)
    fdp = harness.PurePythonFDP(data)
    setup = harness.read_setup(fdp)
    assert setup.config.lmtp
    assert fdp.ConsumeIntInRange(0, 255) == 3
    conv = fdp.ConsumeBytes(fdp.remaining_bytes() - 3)
    assert harness.parse_script(conv) == [
        ("data", b"EHLO x\r\n\xff"), ("data", b"QUIT\r\n"), ("eof", b""), ("data", b"late"),
    ]
    assert [fdp.ConsumeIntInRange(0, 9) for _ in range(4)] == [1, 2, 3, 0]


def test_pure_provider_matches_atheris() -> None:
    atheris = pytest.importorskip("atheris")
    rng = random.Random(5321)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        ours, theirs = harness.PurePythonFDP(data), atheris.FuzzedDataProvider(data)
        for _ in range(12):
            if rng.random() < 0.3:
                n = rng.randrange(6)
                assert ours.ConsumeBytes(n) == theirs.ConsumeBytes(n)
            else:
                lo = rng.randrange(-5, 500)
                hi = lo + rng.choice([0, 1, 2, 99, 255, 256, 1000, 70000])
                assert ours.ConsumeIntInRange(lo, hi) == theirs.ConsumeIntInRange(lo, hi)
            assert ours.remaining_bytes() == theirs.remaining_bytes()
