"""Every mistake on the command line is one line on standard error that
names the culprit (option, file, line), and exit status 2: nothing starts,
nothing is half-served, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trustme


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtp_anyio", "--maildir", str(tmp_path / "md"), *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )


def _files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    other = ca.issue_cert("other.example")
    files = {
        "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem",
        "other_key": tmp_path / "other.pem", "garbage": tmp_path / "garbage.pem",
        "users_bad": tmp_path / "users-bad.txt", "users_latin1": tmp_path / "users-l1.txt",
    }
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    files["garbage"].write_text("this is not PEM\n")
    files["users_bad"].write_text("# users\nalice:secret\nbob-without-a-colon\n")
    files["users_latin1"].write_bytes(b"alice:secret\nj\xf6rg:geheim\n")
    return files


CASES = [
    (["--size", "-5"], "--size"),
    (["--name", "bad name"], "--name"),
    (["--listen", "127.0.0.1:99999"], "99999"),
    (["--listen", "nonsense"], "--listen"),
    (["--listen", "no-such-host.invalid:2525"], "no-such-host.invalid"),
    (["--implicit-tls", "127.0.0.1:0"], "--implicit-tls"),
    (["--auth-file", "{users_bad}"], "users-bad.txt, line 3"),
    (["--auth-file", "{users_latin1}"], "users-l1.txt, line 2: not UTF-8"),
    (["--auth-file", "{missing}"], "--auth-file"),
    (["--tls-cert", "{missing}", "--tls-key", "{key}"], "--tls-cert"),
    (["--tls-cert", "{garbage}", "--tls-key", "{key}"], "garbage.pem: not a PEM certificate"),
    (["--tls-cert", "{cert}", "--tls-key", "{garbage}"], "--tls-key"),
    (["--tls-cert", "{cert}", "--tls-key", "{other_key}"], "other.pem"),
    (["--tls-cert", "{cert}"], "--tls-key"),
]


@pytest.mark.parametrize(("args", "culprit"), CASES,
                         ids=[" ".join(args) for args, _ in CASES])
def test_one_line_naming_the_culprit_and_status_2(
    tmp_path: Path, args: list[str], culprit: str
) -> None:
    files = {name: str(path) for name, path in _files(tmp_path).items()}
    files["missing"] = str(tmp_path / "missing.txt")
    result = _run(tmp_path, *[arg.format(**files) for arg in args])
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m smtp_anyio: error: ")
    assert culprit in lines[0]
    assert result.stdout == ""  # nothing started
    assert not (tmp_path / "md").exists()


def test_good_tls_files_pass_the_checks(tmp_path: Path) -> None:
    from smtp_anyio._cli import build_parser, check_arguments

    files = _files(tmp_path)
    args = build_parser().parse_args(
        ["--tls-cert", str(files["cert"]), "--tls-key", str(files["key"]),
         "--listen", "127.0.0.1:0", "--implicit-tls", "localhost:0"])
    check_arguments(args)  # raises BadInput otherwise


def test_verbosity_and_json_logs(tmp_path: Path) -> None:
    """-v is INFO, -vv DEBUG; --log-json makes each record a JSON object."""
    import json
    import logging

    from smtp_anyio._cli import JSONFormatter, build_parser

    parser = build_parser()
    assert parser.parse_args([]).verbose == 0
    assert parser.parse_args(["-vv"]).verbose == 2
    record = logging.LogRecord("smtp_anyio", logging.INFO, __file__, 1,
                               "[%s] connection from %s", ("abc", "127.0.0.1:1"), None)
    entry = json.loads(JSONFormatter().format(record))
    assert entry["message"] == "[abc] connection from 127.0.0.1:1"
    assert entry["level"] == "INFO" and entry["logger"] == "smtp_anyio"
    assert entry["time"].endswith("Z")
