"""Coverage-guided fuzzing of the smtp_proto core with atheris (libFuzzer).

Run from the repository root (see README.md in this folder)::

    python fuzz/fuzz_core.py --seconds 30        # bounded run: exits 0 unless it crashed
    python fuzz/fuzz_core.py                     # until Ctrl-C; corpus in fuzz/corpus-work/
    python fuzz/fuzz_core.py CRASH_FILE...       # re-run inputs (reproduce a crash)
    python fuzz/fuzz_core.py -seed=1 fuzz/corpus-work fuzz/corpus   # libFuzzer flags, dirs

Every argument except ``--seconds N`` goes to libFuzzer. Without corpus
directories the seeds of fuzz/corpus/ are copied to a scratch directory
(a temporary one with ``--seconds``, else the git-ignored fuzz/corpus-work/),
so fuzzing never changes tracked files. Crash, timeout and OOM inputs land
in the git-ignored fuzz/crash-artifacts/.

The script runs libFuzzer in a child process so that it can print a summary
line (``execs: X, execs/s: Y``) after libFuzzer has exited. The exit status
is libFuzzer's: 0, or non-zero when an input crashed the harness.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "corpus"
WORK = HERE / "corpus-work"
ARTIFACTS = HERE / "crash-artifacts"
DICTIONARY = HERE / "smtp.dict"
_CHILD = "SMTP_PROTO_FUZZ_CHILD"

_STAT = re.compile(r"stat::(number_of_executed_units|average_exec_per_sec):\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_PULSE = re.compile(r"^#(\d+)\s.*exec/s: (\d+)")


def run_libfuzzer(argv: list[str]) -> None:
    """In the child: instrument smtp_proto and hand over to libFuzzer."""
    import atheris

    # str/bytes startswith/endswith comparisons guide the mutator. Not the
    # "RegEx" hook: atheris 3.0 crashes on smtp_proto's surrogate character
    # class ([\ud800-\udfff] cannot cross into its native tracer).
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["smtp_proto"]):
        import smtp_proto  # noqa: F401
    sys.path.insert(0, str(HERE))
    import harness

    provider = atheris.FuzzedDataProvider

    def test_one_input(data: bytes) -> None:
        harness.one_input(data, provider)

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def _has_flag(args: list[str], name: str) -> bool:
    return any(a == f"-{name}" or a.startswith(f"-{name}=") for a in args)


def _seed(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS.iterdir():
        target = directory / seed.name
        if seed.is_file() and not target.exists():
            shutil.copyfile(seed, target)


def main(argv: list[str]) -> int:
    seconds: int | None = None
    args: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--seconds":
            seconds = int(next(it, "0"))
        elif arg.startswith("--seconds="):
            seconds = int(arg.split("=", 1)[1])
        elif arg in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            args.append(arg)
    if seconds is not None and seconds <= 0:
        print("--seconds needs a positive number", file=sys.stderr)
        return 2

    scratch: str | None = None
    if not [a for a in args if not a.startswith("-")]:
        if seconds is not None:
            scratch = tempfile.mkdtemp(prefix="smtp-proto-fuzz-")
            corpus = Path(scratch)
        else:
            corpus = WORK
        _seed(corpus)
        args.append(str(corpus))
    if seconds is not None and not _has_flag(args, "max_total_time"):
        args.append(f"-max_total_time={seconds}")
    ARTIFACTS.mkdir(exist_ok=True)
    defaults = {
        "dict": str(DICTIONARY),
        "artifact_prefix": f"{ARTIFACTS}{os.sep}",
        "print_final_stats": "1",
        "timeout": "60",
    }
    args = [f"-{k}={v}" for k, v in defaults.items() if not _has_flag(args, k)] + args

    import smtp_proto  # (in the parent: the child imports it instrumented)

    # Compiled modules are machine code: the fuzzer drives them but gets
    # coverage only from what stays Python (SMTP_PROTO_PURE=1 fuzzes the source).
    print(f"core: {smtp_proto.BUILD}", file=sys.stderr, flush=True)
    env = dict(os.environ, **{_CHILD: "1"})
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    stats: dict[str, int] = {}
    pulse: tuple[int, int] | None = None
    try:
        with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                              errors="replace", bufsize=1) as child:
            assert child.stderr is not None
            for line in child.stderr:
                sys.stderr.write(line)
                for key, value in _STAT.findall(line):
                    stats[key] = int(value)
                m = _PULSE.match(line)
                if m:
                    pulse = (int(m.group(1)), int(m.group(2)))
                m = _DONE.search(line)
                if m:
                    runs, secs = int(m.group(1)), int(m.group(2))
                    pulse = (runs, runs // max(secs, 1))
            status = child.wait()
    except KeyboardInterrupt:
        status = 130
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    execs = stats.get("number_of_executed_units", pulse[0] if pulse else 0)
    per_second = stats.get("average_exec_per_sec", pulse[1] if pulse else 0)
    print(f"execs: {execs}, execs/s: {per_second}", flush=True)
    if status != 0:
        print(f"libFuzzer exited with status {status}: see the traceback above and "
              f"{ARTIFACTS}", file=sys.stderr)
        return status if status > 0 else 1
    return 0


if __name__ == "__main__":
    if os.environ.get(_CHILD) == "1":
        run_libfuzzer(sys.argv)
    else:
        sys.exit(main(sys.argv[1:]))
