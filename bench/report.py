"""Tables, chart, targets and the docs page of ``bench/run.py``'s results.

Also usable on its own to redo the outputs from a results file::

    python bench/report.py bench/results/results.json [--docs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS_PAGE = Path("docs") / "server" / "performance.rst"
DOCS_CHART = Path("docs") / "_static" / "bench-servers.png"
COLOURS = {"ours": "#2a6db0", "incumbent": "#e08a1e", "ceiling": "#8c8c8c"}

# (workload, server, other server or a number, minimum ratio; None: a maximum value)
TARGETS: list[tuple[str, str, str, float, str]] = [
    # W2 and W3: the compiled core's targets (issue 13), which raised the
    # first ones (1x smtp-server, 3x / 2x / 2x aiosmtpd, 0.5x the ceiling).
    ("W2", "smtp_anyio-uvloop", "smtp-server", 1.25, "ratio"),
    ("W2", "smtp_anyio-uvloop", "aiosmtpd", 4.0, "ratio"),
    ("W2", "smtp_anyio-trio", "aiosmtpd", 2.5, "ratio"),
    ("W2", "smtp_sync", "aiosmtpd", 2.5, "ratio"),
    ("W4", "smtp_anyio-uvloop", "smtp-server", 1.2, "ratio"),
    ("W3", "smtp_anyio-uvloop", "ceiling-uvloop", 0.6, "ratio"),
    ("W5", "smtp_anyio-uvloop", "", 8.0, "max"),
    ("W5", "smtp_anyio-asyncio", "", 8.0, "max"),
    ("W7", "smtp_anyio-uvloop", "smtp-server", 1.0, "ratio"),
    ("W2", "smtp_anyio-uvloop-2w", "smtp_anyio-uvloop", 1.6, "ratio"),
]

# Two worker processes against one ("Running at scale"): (2 workers, 1 worker).
WORKER_PAIRS = [("smtp_anyio-uvloop-2w", "smtp_anyio-uvloop"), ("smtp_sync-2w", "smtp_sync")]


# The compiled core against its pure-Python source: (compiled, pure).
BUILD_PAIRS = [(name, f"{name}-pure") for name in ("smtp_anyio-uvloop", "smtp_anyio-trio",
                                                    "smtp_sync")]
CORE_TARGET = 2.0  # core micro-benchmark, messages: compiled / pure


# -- numbers -------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], workloads: list[Any], servers: list[Any],
              reference: str, ceiling: str) -> dict[str, dict[str, Any]]:
    """Per workload and server: median, min, max of the rounds, the ratios
    of the median to the reference's and the ceiling's, CPU shares."""
    summary: dict[str, dict[str, Any]] = {}
    for wl in workloads:
        rows: dict[str, Any] = {}
        for server in servers:
            mine = [r for r in runs if r["workload"] == wl.key and r["server"] == server.name]
            values = [r["value"] for r in mine if r.get("value") is not None]
            row: dict[str, Any] = {
                "kind": server.kind,
                "values": values,
                "median": statistics.median(values) if values else None,
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "server_cpu": _median([r.get("server_cpu_share") for r in mine]),
                "server_sys": _median([r.get("server_sys_share") for r in mine]),
                "cpu_us": _median([r.get("server_cpu_us_per_item") for r in mine]),
                "client_cpu": _median([r.get("client_cpu_share") for r in mine]),
                "timed_out": any(r.get("timed_out") for r in mine),
                "problems": sorted({r["problem"] for r in mine if r.get("problem")}),
            }
            rows[server.name] = row
        for row in rows.values():
            for key, other in (("ratio_ref", reference), ("ratio_ceiling", ceiling)):
                base = rows.get(other, {}).get("median")
                row[key] = row["median"] / base if row["median"] and base else None
        summary[wl.key] = rows
    return summary


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _med(summary: dict[str, Any], wl: str, server: str) -> float | None:
    row = summary.get(wl, {}).get(server)
    return row["median"] if row else None


def targets(summary: dict[str, dict[str, Any]],
            core_builds: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The issue's targets, measured on this run's medians."""
    found = []
    if core_builds:
        measured = core_builds.get("messages_ratio")
        found.append({"target": f"core micro-benchmark: messages >= {CORE_TARGET:g}x "
                                "faster compiled than pure Python",
                      "measured": measured, "unit": "x",
                      "met": None if measured is None else measured >= CORE_TARGET})
    for wl, server, other, bound, how in TARGETS:
        mine = _med(summary, wl, server)
        if how == "max":
            label = f"{wl}: {server} <= {bound:g} KiB per idle connection"
            measured = mine
            met = None if mine is None else mine <= bound
            found.append({"target": label, "measured": measured, "unit": "KiB", "met": met})
            continue
        if other == "aiosmtpd":  # the faster of the two event loops
            candidates = [(_med(summary, wl, n), n) for n in ("aiosmtpd-asyncio",
                                                              "aiosmtpd-uvloop")]
            candidates = [c for c in candidates if c[0]]
            base, base_name = max(candidates) if candidates else (None, "aiosmtpd")
        else:
            base, base_name = _med(summary, wl, other), other
        ratio = mine / base if mine and base else None
        found.append({
            "target": f"{wl}: {server} >= {bound:g}x {base_name}",
            "measured": ratio, "unit": "x", "met": None if ratio is None else ratio >= bound,
        })
    return found


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def progress_line(wl: Any, record: dict[str, Any]) -> str:
    text = (f"{wl.key} r{record['round']} {record['server']:20} "
            f"{fmt(record.get('value')):>9} {wl.unit:12}")
    if record.get("server_cpu_share") is not None:
        text += (f" server CPU {share(record['server_cpu_share']):>4}"
                 f" (sys {share(record.get('server_sys_share')):>4},"
                 f" {fmt(record.get('server_cpu_us_per_item'))} us each)"
                 f"  client CPU {share(record.get('client_cpu_share')):>4}")
    if record.get("timed_out"):
        text += "  [time bound reached]"
    if record.get("problem"):
        text += f"  PROBLEM: {record['problem']}"
    return text


# -- tables ------------------------------------------------------------------------------


def detail_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for wl in doc["workloads"]:
        direction = "higher is better" if wl["higher_is_better"] else "lower is better"
        for name, row in doc["summary"][wl["key"]].items():
            note = "time bound" if row["timed_out"] else ""
            if row["problems"]:
                note = (note + "; " if note else "") + "; ".join(row["problems"])[:120]
            rows.append([
                f"{wl['key']} ({wl['unit']}, {direction})", name, fmt(row["median"]),
                f"{fmt(row['min'])} - {fmt(row['max'])}", ratio(row["ratio_ref"]),
                ratio(row["ratio_ceiling"]), _cpu_cell(row),
                share(row["client_cpu"]), note,
            ])
    return rows


DETAIL_HEAD = ["workload", "server", "median", "min - max", "x smtp_anyio-uvloop",
               "x ceiling", "server CPU (sys; us per item)", "load gen. CPU", "note"]


def _cpu_cell(row: dict[str, Any]) -> str:
    if row.get("server_cpu") is None:
        return "-"
    text = share(row["server_cpu"])
    if row.get("server_sys") is not None:
        text += f" ({share(row['server_sys'])}"
        text += f"; {fmt(row['cpu_us'])} us)" if row.get("cpu_us") is not None else ")"
    return text


def matrix_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["server"] + [f"{w['key']} {w['unit']}" for w in doc["workloads"]]
    rows = []
    for server in doc["servers"]:
        rows.append([server["name"]] + [
            fmt(doc["summary"][w["key"]].get(server["name"], {}).get("median"))
            for w in doc["workloads"]])
    return head, rows


def target_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in doc["targets"]:
        measured = "-" if t["measured"] is None else (
            f"{t['measured']:.2f}x" if t["unit"] == "x" else f"{t['measured']:.2f} KiB")
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        rows.append([t["target"], measured, met])
    return rows


def _pair_rows(doc: dict[str, Any], pairs: list[tuple[str, str, str]],
               wanted: Callable[[dict[str, Any]], bool]) -> list[list[str]]:
    """Per wanted workload and (label, base, other) measured in this run:
    the base's median, the other's, and other / base."""
    rows = []
    for wl in doc["workloads"]:
        if not wanted(wl):
            continue
        for label, base, other in pairs:
            first = _med(doc["summary"], wl["key"], base)
            second = _med(doc["summary"], wl["key"], other)
            if first is None or second is None:
                continue
            rows.append([wl["key"], label, fmt(first), fmt(second), ratio(second / first)])
    return rows


def worker_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Per workload with a rate: one process, two, and their ratio."""
    return _pair_rows(doc, [(one, one, two) for two, one in WORKER_PAIRS],
                      lambda wl: wl["unit"] == "msg/s")


def build_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Per workload where higher is better: pure core, compiled, ratio."""
    return _pair_rows(doc, [(compiled, pure, compiled) for compiled, pure in BUILD_PAIRS],
                      lambda wl: bool(wl["higher_is_better"]))


def core_build_rows(doc: dict[str, Any]) -> list[list[str]]:
    """The core micro-benchmark on both builds (core_bench.py --builds)."""
    return [[r["name"], r["reads"], fmt(r["pure"]), fmt(r["compiled"]),
             ratio(r["compiled"] / r["pure"])]
            for r in doc.get("core_builds", {}).get("rows", [])
            if not r["name"].startswith("baseline")]


def check_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Per workload: the ceiling, the best real server, and the load
    generator's CPU while it drove the ceiling."""
    rows = []
    ceiling = doc["ceiling"]
    for wl in doc["workloads"]:
        data = doc["summary"][wl["key"]]
        top = data.get(ceiling)
        real = [(row["median"], name) for name, row in data.items()
                if row["kind"] != "ceiling" and row["median"] is not None]
        if not real or top is None or top["median"] is None:
            continue
        best = (max if wl["higher_is_better"] else min)(real)
        rows.append([
            f"{wl['key']} ({wl['unit']})", fmt(top["median"]), f"{best[1]}: {fmt(best[0])}",
            ratio(best[0] / top["median"]), share(top["client_cpu"]), share(top["server_cpu"]),
        ])
    return rows


def observations(doc: dict[str, Any]) -> list[str]:
    """What the CPU figures say about each workload's limit."""
    notes = []
    ceiling = doc["ceiling"]
    for wl in doc["workloads"]:
        data = doc["summary"][wl["key"]]
        top = data.get(ceiling) or {}
        real = {n: r for n, r in data.items() if r["kind"] != "ceiling" and r["median"]}
        if not real or not top.get("median"):
            continue
        key = wl["key"]
        procs = wl.get("client_procs", 1)
        cores = doc["machine"]["cores"] or 1
        busy = [n for n, r in real.items() if (r["client_cpu"] or 0) >= 0.9 * procs]
        if busy:
            notes.append(f"{key}: the load generator used 90% or more of its CPU against "
                         f"{', '.join(busy)}: those figures may be the client's limit.")
        if wl["higher_is_better"]:
            best = max(r["median"] for r in real.values())
            times = f"still {top['median'] / best:.1f}x the best real server"
            client = top["client_cpu"] or 0
            if client >= 0.9 * procs:
                notes.append(f"{key}: against the ceiling the load generator used "
                             f"{share(client)} of a core, so the ceiling's {fmt(top['median'])} "
                             f"is the load generator's own limit (a lower bound of the "
                             f"ceiling), {times}.")
            elif client + (top["server_cpu"] or 0) >= 0.9 * cores:
                notes.append(f"{key}: the ceiling and its load generator together kept the "
                             f"{cores} cores busy: the ceiling's {fmt(top['median'])} is "
                             f"the machine's limit, {times}.")
        idle = [n for n, r in real.items()
                if r["server_cpu"] is not None and r["server_cpu"] < 0.8
                and (r["client_cpu"] or 0) < 0.8 and not r["timed_out"]]
        if len(idle) == len(real):
            notes.append(f"{key}: neither the servers nor the load generator use a whole "
                         "core: the round trips (wake-ups on both sides) set the pace, "
                         "more than either program's speed.")
    return notes


CHECK_HEAD = ["workload", "ceiling-uvloop", "best real server", "best / ceiling",
              "load gen. CPU (on the ceiling)", "ceiling CPU"]


def machine_lines(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    v = m["versions"]
    return [
        f"CPU: {m['cpu']}, {m['cores']} cores; Linux {m['kernel']}",
        f"Python {m['python']}, {m['openssl']}",
        f"smtp-server-py {v['smtp-server-py']}, anyio {v['anyio']}, uvloop {v['uvloop']}, "
        f"trio {v['trio']}, aiosmtpd {v['aiosmtpd']}",
        f"Node {v['node'] or 'absent'}, smtp-server {v['smtp-server'] or 'absent'}; "
        f"smtp-source from {v['smtp-source']}",
        f"smtp_proto, smtp_anyio and smtp_sync at commit {m.get('revision', 'unknown')}; "
        f"the core {m.get('core_build', 'of unrecorded build')} (``-pure`` rows: its source)",
        f"{m['date']}; {doc['rounds']} rounds{' (--quick)' if doc['quick'] else ''}, "
        f"{m['duration_s']} s; load average {m['load_start']} at the start, "
        f"{m['load_end']} at the end",
    ]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    head, rows = matrix_rows(doc)
    parts = [
        "## Machine", "", *(f"- {line}" for line in machine_lines(doc)), "",
        "## Workloads", "",
        *(f"- {w['key']}: {w['title']} ({w['unit']})" for w in doc["workloads"]), "",
        "## Medians", "", _md_table(head, rows), "",
        f"## Detail (median of {doc['rounds']} interleaved rounds, min - max; ratios of "
        "medians; CPU as a share of one core)", "",
        _md_table(DETAIL_HEAD, detail_rows(doc)), "",
        "## Targets", "", _md_table(["target", "measured", ""], target_rows(doc)), "",
        "## Compiled core against pure Python", "",
        _md_table(["workload", "server", "pure", "compiled", "ratio"], build_rows(doc)), "",
        _md_table(["core benchmark", "reads", "pure", "compiled", "ratio"],
                  core_build_rows(doc)), "",
        "## Is the load generator the limit?", "", _md_table(CHECK_HEAD, check_rows(doc)), "",
        *(f"- {note}" for note in observations(doc)), "",
    ]
    return "\n".join(parts)


# -- chart ---------------------------------------------------------------------------------


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = doc["workloads"]
    cols = 2
    nrows = (len(wls) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 3.1 * nrows + 0.8), squeeze=False)
    names = [s["name"] for s in doc["servers"]]
    kinds = {s["name"]: s["kind"] for s in doc["servers"]}
    for ax, wl in zip(axes.flat, wls, strict=False):
        data = doc["summary"][wl["key"]]
        ys = list(range(len(names)))[::-1]
        med = [data[n]["median"] or 0 for n in names]
        low = [max(0.0, (data[n]["median"] or 0) - (data[n]["min"] or 0)) for n in names]
        high = [max(0.0, (data[n]["max"] or 0) - (data[n]["median"] or 0)) for n in names]
        ax.barh(ys, med, xerr=[low, high], color=[COLOURS[kinds[n]] for n in names],
                error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#333333"})
        ax.set_yticks(ys, names, fontsize=8)
        direction = "higher is better" if wl["higher_is_better"] else "lower is better"
        ax.set_title(f"{wl['key']}: {wl['title']}\n{wl['unit']}, {direction}", fontsize=9)
        top = max(m + h for m, h in zip(med, high, strict=True)) if any(med) else 1
        for y, value, up, n in zip(ys, med, high, names, strict=True):
            if data[n]["median"] is not None:
                ax.text(value + up + top * 0.015, y, fmt(value), va="center", fontsize=7)
        ax.set_xlim(0, top * 1.22)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
        ax.legend(handles, ["ours", "incumbents", "raw asyncio ceiling (canned replies)"],
                  loc="center", fontsize=9, frameon=False)
        m = doc["machine"]
        ax.text(0.5, 0.12, f"median of {doc['rounds']} interleaved rounds, bars: min - max\n"
                f"{m['cpu']}, {m['cores']} cores, {m['date']}",
                ha="center", fontsize=8, transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- the docs page -------------------------------------------------------------------------


def _rst_table(head: list[str], rows: list[list[str]], widths: str | None = None) -> str:
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [head, *rows]:
        lines.append(f"   * - {_rst_cell(row[0])}")
        lines += [f"     - {_rst_cell(cell)}" for cell in row[1:]]
    return "\n".join(lines)


def _rst_cell(text: str) -> str:
    text = text.replace("*", "\\*").replace("`", "'").replace("|", "/")
    return text if text.strip() else "\\ "


PAGE = """\
Performance
===========

.. This page is generated by ``python bench/run.py`` from its measurements;
   change bench/report.py rather than editing it.

``bench/run.py`` runs our servers and the incumbents on the same workloads in
the same run, on the same machine, and reports their ratios. Every server is
a *sink*: it reads each message to the end and discards it (the sinks are in
``bench/servers/``). One command runs everything:

.. code-block:: sh

   python bench/run.py             # 3 interleaved rounds, about 10 minutes
   python bench/run.py --quick     # a smoke run

Measured on
-----------

{machine}

The servers
-----------

- ``smtp_anyio`` on asyncio, uvloop and trio, and ``smtp_sync`` (threads):
  reverse DNS off, ``on_data`` iterates the stream (``async for chunk in
  stream: pass``; ``for chunk in stream: pass`` in ``smtp_sync``).
- aiosmtpd on asyncio and uvloop: ``handle_DATA`` receives the message that
  aiosmtpd read line by line, no size limit.
- nodemailer's smtp-server on Node: ``authOptional``, no reverse DNS, no size
  limit, no logger; ``onData`` reads the stream to its end. It always waits
  100 ms before its greeting (early-talker detection, not configurable).
- The *ceiling*: a raw asyncio ``Protocol`` (asyncio and uvloop) with canned
  replies, one ``bytes.find`` per read for the end of the message, nothing
  else. It is the practical limit of a Python server on this loop, and the
  check that the load generator is not the bottleneck.

The workloads
-------------

{workloads}

W1 to W4 are driven by Postfix's ``smtp-source`` (``-s`` sessions, ``-m``
messages, ``-l`` body bytes; ``-d`` keeps the connection for the next
message, without it every message has a connection of its own). It sends
HELO, MAIL, RCPT, DATA, waiting for each reply (no pipelining), and a body
of four header lines and ``-l`` bytes of 80-byte lines that start with a
digit, so no line needs dot-stuffing. W5 to W7 use ``bench/loadgen.py``:
W6 runs 2 processes (uvloop) of 100 concurrent clients that each connect,
complete the TLS handshake (RSA-2048 certificate, TLS 1.3, no session
resumption), read the 220 greeting and reset the connection;
W7 runs 2 processes that send ``MAIL``, ``RCPT`` and ``DATA`` in one write,
then the body. Every load loop is bounded by a count and a time limit.

Results
-------

.. image:: /_static/bench-servers.png
   :alt: One bar chart per workload: median with min-max of every server

Medians (higher is better, except W5):

{matrix}

In detail: the median of the rounds, the range, the ratio of the median to
``smtp_anyio`` on uvloop and to the ceiling (raw asyncio on uvloop), and the
CPU time of the server and of the load generator as a share of one core.

{detail}

Targets
-------

{targets}

What limits the targets
-----------------------

Profiled with ``py-spy`` (``run.py --profile``), ``perf record``, ``cProfile``
and ``strace -c`` on the sinks, on this machine. Where a target above is
missed (or only just met: differences of a few percent move with the
machine's load), this is what limits it:

- **W2 on uvloop against smtp-server.** Both make the same system calls per
  message (``strace -c``: 4 reads and 4 writes; on loopback a write also
  runs the receiving side of TCP, so they are about half of either
  server's CPU). The difference is the rest. With the pure-Python core,
  ``smtp_anyio`` spends about 40 us of interpreted Python per message
  (the core about 18 us of it), against about 25 us of JIT-compiled
  JavaScript in smtp-server. With the compiled core, the uvloop server
  needs 20 to 60 us less CPU per message on W2 than its ``-pure`` row (the
  spread is the machine's: 92 against 152 us in one full run, 77 against
  99 us in a quick one). That brings it level with smtp-server or a little
  ahead, not to 1.25x. What remains is the driver and the message stream,
  which stay interpreted, and the CPython runtime that the compiled code
  still calls (next point).
- **The core micro-benchmark (compiled against pure Python).** mypyc removes
  the interpreter's bytecode dispatch. It does not remove the calls the code
  makes into the CPython runtime: allocating the events and reply bytes,
  ``bytes``/``str`` methods and regular expressions, and attribute lookups
  on the objects that stay interpreted (``Session``, which applications
  extend, and ``ServerConfig``, about 50 generic lookups per message). Those
  calls cost the same in both builds. ``perf record`` of the compiled
  message loop puts 11% of the samples in the compiled module and 77% in
  ``libpython``. Hence about 1.6x per message, not 2x. Dispatching the
  commands, where the interpreter's share is largest, gains more (1.3 to
  1.7x); DATA, which is mostly ``bytes.find`` and slicing, gains about
  1.1x.
- **W3 (a connection per message) against the ceiling.** The core's work
  for a whole connection (greeting, EHLO, one message) is about 24 us
  compiled and 56 us pure, out of 300 to 400 us of server CPU per
  connection. The rest is the connection itself: the asyncio transport,
  the driver's objects and timers, the kernel's accept and close (a third
  of the CPU is ``sys``). So the compiled core does not move W3: in a
  separate run of four interleaved rounds, the two builds measured within
  each other's spread (2,480 to 3,100 compiled, 2,326 to 3,192 pure).
- **W2 on trio.** trio's scheduler is Python code, and every read and
  write passes through it: a trio server with canned replies and no SMTP at
  all (``trio.serve_tcp``, ``receive_some``/``send_all``) needs about 78 us
  per message here, against 31 us for the uvloop ceiling. Our protocol work
  comes on top. Taken so far: no cancel scope for a wait without a timeout,
  and a short message's ``on_data`` runs in the reader task (no task to
  wake). Tried and dropped, because slower: replies sent straight into the
  socket, and reads straight from it without a scheduler trip. Both made
  the reader come back to an empty socket more often, each time paying
  for an ``epoll_ctl`` and a wait.
- **W2 on smtp_sync.** A thread per client: with 20 busy threads on 2
  cores, the GIL changes hands at every blocking call, and the hand-overs
  (``futex`` calls and context switches; ``perf``: 60% of the CPU in the
  kernel, most of it switching tasks) cost more than the protocol work. A
  thread-per-client server with canned replies does about 16,000 messages
  per second here because it holds the GIL for a few microseconds per
  reply; ours holds it for the protocol work, and contention grows with the
  time it is held. Taken so far: kernel socket timeouts (``SO_RCVTIMEO``,
  ``SO_SNDTIMEO``) instead of a ``poll()`` before every ``recv()`` and
  ``send()``; replies sent by a non-blocking ``send()`` that keeps the GIL;
  no lock for the stream that a client's thread both fills and reads.
  Together: from about 20 GIL hand-overs per message to 4, one per
  ``recv()``, which no blocking design avoids.
- **W3 and W5** were limited by anyio's per-task costs (a handle, an event,
  a wrapper coroutine, a task group and its cancel scopes for every
  connection): on asyncio the connections now run as plain asyncio tasks.
  On trio a connection still has its nursery, a reader task and anyio's
  stream objects: about three times the memory of an asyncio connection,
  which has no reader task at all (the loop calls the protocol).
- **Run-to-run spread.** This machine is shared: one server's rate can
  vary by up to 2x between the rounds of one run (the min - max columns),
  and the median of three rounds can land on either side of a target line
  from one run to the next (W7 against smtp-server has measured from 0.91x
  to 1.24x in full runs). Ratios from several runs are the figure to trust.

Worker processes
----------------

The ``-2w`` rows run the same sink in two worker processes on one port
(:func:`smtp_anyio.run_workers`, :func:`smtp_sync.run_workers`; see
:doc:`scaling`), against the one-process rows of the same run:

{workers}

This machine has two cores, and the load generator runs on them too: a
second worker can only have what the client and the first worker leave.
Where one process already keeps its core busy (``server CPU`` near 100%),
the second adds at most the rest of the other core, less the client's
share; where one process waits on its clients (W2: 20 sessions, each
waiting for its reply before the next command), more processes shorten
the queue, not the wait. On a box with more cores than load, workers
scale with the cores.

The compiled core
-----------------

The servers above run the core as installed: compiled with mypyc (see
:doc:`../core/compiled`). The ``-pure`` rows run the same sinks with
``SMTP_PROTO_PURE=1``, on the core's pure-Python source, in the same rounds:

{builds}

The core alone, without sockets (``python bench/core_bench.py --builds``:
both builds in alternating processes, the median of three each; rates per
second, MB/s for DATA and BDAT):

{core_builds}

Is the load generator the limit?
--------------------------------

The ceiling does the least a server can do on the same connections. Where it
runs far faster than every real server, the load generator has room to
spare; for TLS handshakes the cryptography dominates and the CPU columns
tell instead.

{check}

{observations}

Reading the numbers
-------------------

- Rounds are interleaved (every server once, then again), so that a change
  in the machine's load hits all servers alike; a wide min-max range means
  the machine was busy. Compare ratios rather than absolute numbers.
- *server CPU* is the server process's CPU time over the run as a share of
  one core (above 100% for the threaded server), with its kernel part and
  the CPU time per message (or handshake, or MB); *load gen. CPU* is the
  same for the load generator. A server near 100% is the limit; a load
  generator near 100% is its own limit.
- The load generator runs on the same two cores as the server: a server
  that needs more CPU also slows its client a little.
- smtp-server's 100 ms greeting delay dominates W3 (at most 10 connections
  per 100 ms, 100 messages per second, whatever the server could do; the run
  stops at its time bound and counts what was delivered) and adds 100 ms to
  every W6 handshake (with 200 concurrent clients it caps smtp-server at
  2,000 per second).
- W5 is the growth of the server's resident memory (VmRSS) from before to
  after opening 1,000 connections that said EHLO, divided by 1,000; for
  ``smtp_sync`` it includes a thread per connection.
"""


def write_docs(doc: dict[str, Any], chart_path: Path, root: Path) -> None:
    workloads = "\n".join(f"- **{w['key']}**: {w['title']} ({w['unit']})"
                          for w in doc["workloads"])
    head, rows = matrix_rows(doc)
    text = PAGE.format(
        machine="\n".join(f"- {line}" for line in machine_lines(doc)),
        workloads=workloads,
        matrix=_rst_table(head, rows),
        detail=_rst_table(DETAIL_HEAD, detail_rows(doc)),
        targets=_rst_table(["target", "measured", "status"], target_rows(doc)),
        workers=_rst_table(["workload", "server", "1 process", "2 workers", "2 / 1"],
                           worker_rows(doc)) if worker_rows(doc) else "(not measured)",
        builds=_rst_table(["workload", "server", "pure Python", "compiled core",
                           "compiled / pure"], build_rows(doc))
        if build_rows(doc) else "(not measured: the installed core was pure Python)",
        core_builds=_rst_table(["benchmark", "reads", "pure Python", "compiled",
                                "compiled / pure"], core_build_rows(doc))
        if core_build_rows(doc) else "(not measured)",
        check=_rst_table(CHECK_HEAD, check_rows(doc)),
        observations="\n".join(f"- {_rst_cell(n)}" for n in observations(doc)) or "",
    )
    (root / DOCS_PAGE).write_text(text)
    (root / DOCS_CHART).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chart_path, root / DOCS_CHART)


# -- profiles --------------------------------------------------------------------------------


def profile_summary(path: Path, top: int = 15) -> str:
    """Top frames by own time (and by total time) of a py-spy raw profile."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return f"{path}: no samples"
    lines = [f"### {path.name}: {samples} samples", "", "| own % | total % | frame |",
             "|---|---|---|"]
    for frame, n in own.most_common(top):
        lines.append(f"| {100 * n / samples:.1f} | {100 * total[frame] / samples:.1f} | "
                     f"`{frame}` |")
    return "\n".join(lines) + "\n"


def _frame(text: str) -> str:
    """``name (path:line)`` without the line number, path shortened."""
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--docs", action="store_true", help="rewrite the docs page too")
    parser.add_argument("--core-builds", type=Path, metavar="JSON",
                        help="add a core_bench.py --builds --json result to the results")
    args = parser.parse_args()
    doc = json.loads(args.results.read_text())
    if args.core_builds:
        doc["core_builds"] = json.loads(args.core_builds.read_text())
        args.results.write_text(json.dumps(doc, indent=1) + "\n")
    doc["targets"] = targets(doc["summary"], doc.get("core_builds"))  # today's targets
    chart_path = args.results.with_name("bench-servers.png")
    chart(doc, chart_path)
    print(markdown(doc))
    if args.docs:
        write_docs(doc, chart_path, Path(__file__).resolve().parent.parent)
        print("wrote the docs page", file=sys.stderr)


if __name__ == "__main__":
    main()
