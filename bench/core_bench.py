"""Micro-benchmark of the smtp_proto core alone: no sockets, no backend.

Run from the repository root::

    python bench/core_bench.py            # full run (about half a minute)
    python bench/core_bench.py --quick    # fewer repetitions, smaller inputs
    python bench/core_bench.py --json out.json
    python bench/core_bench.py --profile  # cProfile the DATA path (64 KiB reads)

It prints a Markdown table. Every figure is the median of several runs, with
the minimum and maximum beside it. Measured:

* commands/s for a pipelined conversation (EHLO, then N transactions of
  MAIL FROM with SIZE/BODY, three RCPT, RSET and NOOP) fed in 64 KiB reads,
  and the same commands fed one per ``receive_data()`` call;
* DATA MB/s for a 10 MiB message of 78-column lines, one line in 50 starting
  with a dot (dot-stuffed on the wire), fed in 16, 64 and 256 KiB reads:
  ``receive_data()`` plus ``next_event()`` until ``MessageComplete``;
* the baseline: a bare ``bytes.find(b"\\r\\n.\\r\\n")`` per read over the same
  reads, the least any DATA reader must do, and the ratio of the two times
  (the target is DATA within 3x of the bare find);
* BDAT MB/s for the same 10 MiB in 64 KiB reads;
* messages/s in the main benchmark's shape (W2): MAIL, RCPT, DATA and a
  1 KiB body, each in its own read as a client that waits for every reply
  sends them, decisions accepted: the core's whole cost per message.

``--builds`` runs all of it once on the compiled core and once on its
pure-Python source (``SMTP_PROTO_PURE=1``), in alternation, and prints the
two side by side with their ratio (the target: messages at least 2x faster
compiled).

MB means 10**6 bytes of input fed to the core (the dot-stuffed wire bytes for
DATA). This is not a test: it asserts only that the core's output is right.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import smtp_proto
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import smtp_proto

from smtp_proto import (
    NEED_DATA,
    DataChunk,
    ServerConfig,
    ServerConnection,
)

KiB = 1024
MiB = 1024 * KiB
END = b"\r\n.\r\n"
LINE_WIDTH = 78
DOT_EVERY = 50

TARGET = 3.0  # DATA time / bare find time

CONFIG = ServerConfig(auth_optional=True, max_recipients=None)


# -- inputs ------------------------------------------------------------------


def make_message(size: int) -> tuple[bytes, bytes]:
    """``(original, wire)``: ``size`` bytes of 78-column CRLF lines, one in
    ``DOT_EVERY`` starting with a dot, and the same dot-stuffed with the
    end marker, as a client sends it after DATA."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 +-=/:;,"
    lines = []
    total = 0
    i = 0
    while total < size:
        start = (i * 7) % len(alphabet)
        text = (alphabet[start:] + alphabet * 2)[:LINE_WIDTH]
        if i % DOT_EVERY == 0:
            text = b"." + text[1:]
        line = text + b"\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    original = b"".join(lines)
    stuffed = b"".join(b"." + line if line[:1] == b"." else line for line in lines)
    return original, stuffed + b".\r\n"


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def transaction(i: int) -> list[bytes]:
    return [
        f"MAIL FROM:<sender{i}@example.org> SIZE={10000 + i} BODY=8BITMIME\r\n".encode(),
        b"RCPT TO:<alice@example.net>\r\n",
        b"RCPT TO:<bob@example.net>\r\n",
        b"RCPT TO:<carol@example.com>\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
    ]


def conversation(transactions: int) -> list[bytes]:
    """EHLO, then ``transactions`` x (MAIL, 3 x RCPT, RSET, NOOP): one item a command."""
    commands = [b"EHLO client.example.org\r\n"]
    for i in range(transactions):
        commands += transaction(i)
    return commands


# -- driving the core ----------------------------------------------------------


def greeted() -> ServerConnection:
    conn = ServerConnection(CONFIG, remote_address="192.0.2.1")
    conn.send_greeting()
    conn.data_to_send()
    return conn


def pump(conn: ServerConnection, reads: Sequence[bytes], body: list[bytes]) -> int:
    """What a backend does: feed each read, drain the events (accepting every
    decision, keeping DataChunk bytes), flush the replies. Returns reply bytes."""
    out = 0
    next_event = conn.next_event
    receive_data = conn.receive_data
    append = body.append
    for data in reads:
        receive_data(data)
        while True:
            event = next_event()
            if event is NEED_DATA:
                break
            if type(event) is DataChunk:
                append(event.data)
            elif conn.pending is not None:
                conn.accept()
        out += len(conn.data_to_send())
    return out


def in_data_state() -> ServerConnection:
    conn = greeted()
    pump(conn, [b"EHLO client.example.org\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
                b"RCPT TO:<b@example.net>\r\nDATA\r\n"], [])
    assert conn.state.value == "DATA", conn.state
    return conn


def in_transaction() -> ServerConnection:
    conn = greeted()
    pump(conn, [b"EHLO client.example.org\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\n"
                b"RCPT TO:<b@example.net>\r\n"], [])
    return conn


# -- measuring -----------------------------------------------------------------


@dataclass
class Row:
    name: str
    reads: str
    unit: str
    work: float  # units of work per run (commands, or MB)
    times: list[float] = field(default_factory=list)
    note: str = ""
    ratios: list[float] = field(default_factory=list)  # DATA: time / bare find time, per round

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def rates(self) -> tuple[float, float, float]:
        """(median, min, max) of work per second."""
        return (self.work / self.median, self.work / max(self.times),
                self.work / min(self.times))


Job = tuple[Callable[[], object], Callable[[object], object]]


def measure_each(runs: int, *jobs: Job) -> list[list[float]]:
    """Time each ``run(setup())`` (setup untimed) ``runs`` times, after one
    warm-up round. The jobs take turns within every round, so that a change
    in machine load hits all of them alike and their ratios stay meaningful."""
    times: list[list[float]] = [[] for _ in jobs]
    for i in range(runs + 1):
        for job, (setup, run) in enumerate(jobs):
            state = setup()
            gc.collect()
            started = time.perf_counter()
            run(state)
            elapsed = time.perf_counter() - started
            if i:
                times[job].append(elapsed)
    return times


def measure(runs: int, setup: Callable[[], object], run: Callable[[object], object]) -> list[float]:
    return measure_each(runs, (setup, run))[0]


def bench_commands(runs: int, transactions: int) -> list[Row]:
    commands = conversation(transactions)
    count = len(commands)
    pipelined = split(b"".join(commands), 64 * KiB)
    rows = []
    for label, reads in (("64 KiB", pipelined), ("1 command", commands)):
        # Correctness once, untimed: one reply per command, all positive.
        conn = greeted()
        out = 0
        for data in reads:
            conn.receive_data(data)
            while conn.next_event() is not NEED_DATA:
                if conn.pending is not None:
                    conn.accept()
            replies = conn.data_to_send().split(b"\r\n")[:-1]
            out += len([r for r in replies if r[3:4] == b" "])
            assert all(r[:1] == b"2" for r in replies), replies[:3]
        assert out == count, (out, count)
        assert conn.session.transaction == 1 and conn.state.value == "COMMAND"

        sent: list[int] = []

        def run(conn: object, reads: list[bytes] = reads, sent: list[int] = sent) -> None:
            sent.append(pump(conn, reads, []))  # type: ignore[arg-type]

        times = measure(runs, greeted, run)
        row = Row("commands, pipelined" if label == "64 KiB" else "commands, one per call",
                  label, "commands/s", count, times)
        row.note = (f"{count} commands ({transactions} x MAIL+3 RCPT+RSET+NOOP), "
                    f"{sent[-1]:,} reply bytes")
        rows.append(row)
    return rows


def bench_data(runs: int, original: bytes, wire: bytes, sizes: Sequence[int]) -> list[Row]:
    rows = []
    mb = len(wire) / 1e6
    for size in sizes:
        reads = split(wire, size)
        label = f"{size // KiB} KiB"

        def run(conn: object, reads: list[bytes] = reads) -> list[bytes]:
            body: list[bytes] = []
            pump(conn, reads, body)  # type: ignore[arg-type]
            return body

        # Correctness, untimed: the chunks rebuild the original, one 250.
        conn = in_data_state()
        body = run(conn)
        assert b"".join(body) == original, "DATA body differs from the original"
        assert conn.state.value == "COMMAND" and conn.session.transaction == 2

        def find_only(_: object, reads: list[bytes] = reads) -> int:
            # Per read: look for the end marker, and across the boundary with
            # the previous read (a few bytes, so that the scan is correct).
            tail = b""
            for data in reads:
                if data.find(END) >= 0 or (tail and (tail + data[:4]).find(END) >= 0):
                    return 1
                tail = data[-4:]
            return 0

        def find_unstuff(_: object, reads: list[bytes] = reads) -> list[bytes]:
            # Informational: the end scan plus bytes.replace unstuffing, the
            # least a correct reader built on bytes methods does.
            out = []
            for data in reads:
                end = data.find(END)
                out.append(data.replace(b"\r\n.", b"\r\n"))
                if end >= 0:
                    break
            return out

        assert find_only(None) == 1
        core_t, find_t, replace_t = measure_each(
            runs, (in_data_state, run), (_none, find_only), (_none, find_unstuff)
        )
        core = Row("DATA (core)", label, "MB/s", mb, core_t)
        core.ratios = [c / f for c, f in zip(core_t, find_t, strict=True)]
        core.note = (f"{statistics.median(core.ratios):.2f}x the bare find time "
                     f"({min(core.ratios):.2f} - {max(core.ratios):.2f}x)")
        rows.append(core)
        rows.append(Row("baseline: bytes.find", label, "MB/s", mb, find_t,
                        "end-marker scan only"))
        rows.append(Row("baseline: find + bytes.replace", label, "MB/s", mb, replace_t,
                        "scan + unstuff with bytes.replace (informational)"))
    return rows


def _none() -> None:
    return None


def bench_bdat(runs: int, original: bytes, size: int) -> Row:
    reads = split(f"BDAT {len(original)} LAST\r\n".encode() + original, size)

    def run(conn: object) -> list[bytes]:
        body: list[bytes] = []
        pump(conn, reads, body)  # type: ignore[arg-type]
        return body

    conn = in_transaction()
    assert b"".join(run(conn)) == original, "BDAT body differs from the original"
    assert conn.session.transaction == 2
    return Row("BDAT (core)", f"{size // KiB} KiB", "MB/s", len(original) / 1e6,
               measure(runs, in_transaction, run), "one BDAT LAST chunk of the message")


def message_reads(count: int) -> list[bytes]:
    body = (b"Subject: benchmark\r\n\r\n" + b"x" * 70 + b"\r\n") * 13
    body = body[:1024 - 2] + b"\r\n"
    reads: list[bytes] = []
    for i in range(count):
        reads += [f"MAIL FROM:<sender{i % 100}@example.org>\r\n".encode(),
                  b"RCPT TO:<rcpt@example.net>\r\n", b"DATA\r\n", body + b".\r\n"]
    return reads


def helloed() -> ServerConnection:
    conn = greeted()
    pump(conn, [b"EHLO client.example.org\r\n"], [])
    return conn


def bench_messages(runs: int, count: int) -> Row:
    reads = message_reads(count)

    def run(conn: object) -> int:
        return pump(conn, reads, [])  # type: ignore[arg-type]

    conn = helloed()
    run(conn)
    assert conn.session.transaction == count + 1, conn.session.transaction
    return Row("messages, W2 shape", "1 command", "messages/s", count,
               measure(runs, helloed, run), "MAIL, RCPT, DATA, 1 KiB body: a read each")


# -- reporting -------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| benchmark | reads | median | min - max | unit | notes |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        med, lo, hi = row.rates()
        fmt = "{:,.0f}" if row.unit in ("commands/s", "messages/s") else "{:,.1f}"
        lines.append(
            f"| {row.name} | {row.reads} | {fmt.format(med)} | "
            f"{fmt.format(lo)} - {fmt.format(hi)} | {row.unit} | {row.note} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def profile_data(wire: bytes) -> None:
    import cProfile
    import pstats

    reads = split(wire, 64 * KiB)
    conn = in_data_state()
    profiler = cProfile.Profile()
    profiler.enable()
    pump(conn, reads, [])
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(15)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller inputs")
    parser.add_argument("--json", metavar="PATH", help="also write the raw timings as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one DATA transfer in 64 KiB reads and exit")
    parser.add_argument("--builds", action="store_true",
                        help="the compiled core and its pure-Python source side by side")
    args = parser.parse_args(argv)
    if args.builds:
        return compare_builds(args.quick, args.json)

    runs = 3 if args.quick else 5
    transactions = 2000 if args.quick else 20000
    message_size = 10 * MiB
    original, wire = make_message(message_size)

    if args.profile:
        profile_data(wire)
        return 0

    started = time.perf_counter()
    rows = bench_commands(runs, transactions)
    rows += bench_data(runs, original, wire, (16 * KiB, 64 * KiB, 256 * KiB))
    rows.append(bench_bdat(runs, original, 64 * KiB))
    rows.append(bench_messages(runs, transactions))
    elapsed = time.perf_counter() - started

    impl = platform.python_implementation()
    print(f"smtp_proto {smtp_proto.__version__} core benchmark ({smtp_proto.BUILD}), "
          f"{impl} {platform.python_version()} on {platform.machine()} "
          f"({platform.system()} {platform.release()}, {cpu_model()})")
    print(f"{runs} runs per row (median, min - max of the rates); message "
          f"{len(original):,} bytes, {len(wire):,} on the wire; {elapsed:.1f}s in all\n")
    print(table(rows))

    by_key = {(r.name, r.reads): r for r in rows}
    ratios = {
        reads: statistics.median(by_key[("DATA (core)", reads)].ratios)
        for reads in ("16 KiB", "64 KiB", "256 KiB")
    }
    ratio = ratios["64 KiB"]
    print(f"\nTarget: DATA within {TARGET:g}x of the bare find scan. DATA / find time: "
          + ", ".join(f"{r:.2f}x ({reads})" for reads, r in ratios.items())
          + f"; 64 KiB reads {'met' if ratio <= TARGET else 'MISSED'}.")

    if args.json:
        report = {
            "python": sys.version,
            "implementation": impl,
            "machine": platform.machine(),
            "platform": platform.platform(),
            "runs": runs,
            "message_bytes": len(original),
            "wire_bytes": len(wire),
            "data_to_find_ratio": ratios,
            "rows": [{**asdict(r), "median_rate": r.rates()[0]} for r in rows],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def compare_builds(quick: bool, json_path: str | None = None) -> int:
    """Both builds in alternating child processes (3 each), so that a change
    in machine load falls on both alike; per row the median of the rates."""
    if not smtp_proto.COMPILED:
        print(f"--builds needs the compiled core; this one is {smtp_proto.BUILD}")
        return 2
    rates: dict[str, dict[tuple[str, str], list[float]]] = {"compiled": {}, "pure": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(3):
            for build, pure in (("compiled", ""), ("pure", "1")):
                out = Path(scratch) / f"{build}{i}.json"
                subprocess.run(
                    [sys.executable, __file__, "--json", str(out), *(["--quick"] * quick)],
                    check=True, stdout=subprocess.DEVNULL,
                    env=dict(os.environ, SMTP_PROTO_PURE=pure),
                )
                for row in json.loads(out.read_text())["rows"]:
                    key = (row["name"], row["reads"])
                    rates[build].setdefault(key, []).append(row["median_rate"])
    rows = [{"name": name, "reads": reads, "compiled": statistics.median(compiled),
             "pure": statistics.median(rates["pure"][(name, reads)])}
            for (name, reads), compiled in rates["compiled"].items()]
    print("| benchmark | reads | compiled | pure Python | compiled / pure |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['reads']} | {row['compiled']:,.1f} | {row['pure']:,.1f} "
              f"| {row['compiled'] / row['pure']:.2f}x |")
    (messages,) = [row for row in rows if row["name"] == "messages, W2 shape"]
    ratio = messages["compiled"] / messages["pure"]
    print(f"\nTarget: messages at least 2x faster compiled: {ratio:.2f}x "
          f"{'met' if ratio >= 2 else 'MISSED'}.")
    if json_path:
        Path(json_path).write_text(json.dumps(
            {"quick": quick, "messages_ratio": ratio, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
