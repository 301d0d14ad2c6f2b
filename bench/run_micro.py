#!/usr/bin/env python3
"""Micro benchmarks of zmicro's core pieces: the pure C cost next to the
cost of the same call from Python, in one markdown table.

Steps:

1. build ``bench/c/bench_src.c`` with ``src/*.c`` into ``bench/build/``
   (``-O2``): ``bench_src`` links the system libsodium, ``bench_src_dl``
   dlopen()s the libsodium bundled in pyzmq's wheel (the one the Python core
   calls), so the MAC rows compare C and Python on the same library;
2. run them (``--json``) and check that C and Python encode the same header
   bytes and compute the same MACs;
3. run ``bench/micro`` with pytest-benchmark (``--benchmark-json``; the json
   holds every round's time, from which the p99 is computed);
4. print the table, machine and versions; ``--record`` also writes it into
   the "Micro: core pieces" section of ``bench/RESULTS.md``.

Everything runs with the interpreter running this script (``sys.executable``).

    python bench/run_micro.py            # full run (about 2.5 minutes)
    python bench/run_micro.py --smoke    # CI: quick, checks the harness only
    python bench/run_micro.py --record   # full run, then update RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SRC = ROOT / "src"
C_SOURCE = BENCH / "c" / "bench_src.c"
RESULTS = BENCH / "RESULTS.md"
BEGIN = "<!-- micro:begin: written by bench/run_micro.py --record -->"
END = "<!-- micro:end -->"

# (C program args, pytest-benchmark args) per mode. Batches and rounds both
# last at least 10 us, so C and Python p99s are over comparable spans. A full
# run measures each operation for 0.3 s per side and repeats the whole C /
# Python alternation 5 times: on a shared host whole stretches of a second
# or so run at about half speed (neighbours), so one run per side can compare
# a fast C stretch with a slow Python one. The lowest of the runs' medians is
# what each side costs when the host lets it run; tails stay in the p99
# (median of the runs' p99s).
FULL_REPEAT = 5
FULL = (
    ["--batch-ns", "10000", "--max-time", "0.3", "--warmup", "0.05",
     "--min-batches", "200", "--max-batches", "500000"],
    ["--benchmark-min-time=0.00001", "--benchmark-max-time=0.3",
     "--benchmark-min-rounds=200", "--benchmark-warmup=on",
     "--benchmark-warmup-iterations=20000"],
)
SMOKE = (
    ["--batch-ns", "10000", "--max-time", "0.005", "--warmup", "0.001",
     "--min-batches", "20", "--max-batches", "300"],
    ["--benchmark-min-time=0.00001", "--benchmark-max-time=0.005",
     "--benchmark-min-rounds=20", "--benchmark-warmup=off"],
)

# Table layout: op keys in order, with the text of C-only rows.
OPS = [
    "call",
    "header.write.typical",
    "header.size.typical",
    "header.write.signed",
    "header.read.typical",
    "header.read.signed",
] + [
    f"mac.{what}.{alg}.{size}"
    for what in ("compute", "verify")
    for alg in ("hmac-sha256", "blake2b")
    for size in (64, 4096)
] + [
    f"select.{name}.{n}{suffix}"
    for name in ("random", "round_robin", "p2c", "peak_ewma", "hash")
    for n in (10, 1000, 10000)
    for suffix in ("", ".filter")
]
C_ONLY_LABELS = {
    "header.size.typical":
        "C only: `zm_wire_size`, typical (`encode()` calls it before the write)",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (as bench_src.c does)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = q * (n - 1)
    lo = math.floor(pos)
    if lo >= n - 1:
        return sorted_values[-1]
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[lo + 1] - sorted_values[lo]) * frac


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("$ " + shlex.join(str(c) for c in cmd))
    return subprocess.run(cmd, text=True, **kw)


# ---------------------------------------------------------------------------
# C side
# ---------------------------------------------------------------------------


def build_c(cc: str, build: Path) -> dict[str, Path]:
    """Build the two C programs; returns {"system": path, "dlopen": path} for
    those that built (the system one needs libsodium's headers)."""
    build.mkdir(parents=True, exist_ok=True)
    sources = [str(C_SOURCE)] + sorted(str(p) for p in SRC.glob("*.c"))
    common = [cc, "-O2", "-std=c11", "-Wall", "-Wextra", f"-I{SRC}"]
    out = {}
    variants = {
        "system": (build / "bench_src", [], ["-lsodium", "-lm"]),
        "dlopen": (build / "bench_src_dl", ["-DBENCH_SODIUM_DLOPEN"],
                   ["-ldl", "-lm"]),
    }
    for name, (exe, defs, libs) in variants.items():
        proc = run(common + defs + sources + libs + ["-o", str(exe)],
                   capture_output=True)
        if proc.returncode == 0:
            if proc.stderr.strip():
                log(proc.stderr.rstrip())
            out[name] = exe
        elif name == "system":
            log("warning: cannot link the system libsodium (libsodium-dev "
                "missing?); C rows will use pyzmq's libsodium only\n"
                + proc.stderr.rstrip())
        else:
            raise SystemExit("error: cannot build bench_src_dl:\n" + proc.stderr)
    return out


def run_c(exe: Path, args: list[str]) -> dict:
    proc = run([str(exe), "--json", *args], capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {exe.name} failed ({proc.returncode}):\n"
                         f"{proc.stderr}")
    doc = json.loads(proc.stdout)
    doc["by_op"] = {r["op"]: r for r in doc["results"]}
    return doc


def pyzmq_sodium() -> tuple[str | None, str | None]:
    """(path, version) of the libsodium loaded with pyzmq's libzmq, found the
    way the core finds it (through pyzmq's backend module)."""
    import ctypes

    from zmq.backend.cython import _zmq

    try:
        fn = ctypes.CDLL(_zmq.__file__).sodium_version_string
    except (OSError, AttributeError):
        return None, None
    fn.restype = ctypes.c_char_p
    version = fn().decode()
    path = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and "libsodium" in Path(parts[5]).name:
                path = parts[5]
                break
    return path, version


# ---------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------


def run_pytest(json_path: Path, args: list[str], verbose: bool) -> dict:
    cmd = [
        sys.executable, "-m", "pytest", str(BENCH / "micro"), "-q",
        "-p", "no:cacheprovider", f"--benchmark-json={json_path}",
        "--benchmark-columns=median,iqr,rounds,iterations",
        "--benchmark-group-by=group", *args,
    ]
    proc = run(cmd, cwd=ROOT, capture_output=not verbose)
    if proc.returncode != 0:
        raise SystemExit(
            f"error: pytest failed ({proc.returncode}):\n"
            f"{proc.stdout or ''}{proc.stderr or ''}")
    with open(json_path) as f:
        doc = json.load(f)
    rows = []
    for b in doc["benchmarks"]:
        values = sorted(b["stats"]["data"])  # seconds per call, one per round
        info = b["extra_info"]
        rows.append(dict(
            op=info["op"], impl=info["impl"], label=info["label"],
            name=b["name"], rounds=len(values),
            iterations=b["stats"]["iterations"],
            median_ns=percentile(values, 0.5) * 1e9,
            p99_ns=percentile(values, 0.99) * 1e9,
        ))
    return {"rows": rows, "machine_info": doc.get("machine_info", {})}


def cross_check(c_doc: dict, sodium_docs: list[dict]) -> None:
    """C and Python must encode the same header and compute the same MACs,
    else the rows do not time the same work."""
    sys.path.insert(0, str(BENCH))
    import data
    from zmicro import mac

    for kind in ("typical", "signed"):
        py = data.typical_header(signed=kind == "signed").encode().hex()
        if c_doc["headers"][kind] != py:
            raise SystemExit(
                f"error: the {kind} header differs between bench_src.c and "
                f"bench/data.py:\n  C:      {c_doc['headers'][kind]}\n"
                f"  Python: {py}")
    frames0 = data.typical_header().encode()
    algs = {"hmac-sha256": mac.Alg.HMAC_SHA256, "blake2b": mac.Alg.BLAKE2B}
    for doc in sodium_docs:
        for key, tag in doc["macs"].items():
            _, _, alg, size = key.split(".")
            py = mac.compute(algs[alg], data.MAC_KEY,
                             [frames0, data.body(int(size))]).hex()
            if tag != py:
                raise SystemExit(
                    f"error: {key} differs between C ({doc['sodium']}) and "
                    f"Python:\n  C:      {tag}\n  Python: {py}")


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def fmt_ns(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "n/a"


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    rev = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "core",
             "python", "setup.py"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return rev + (" + uncommitted changes in src/core/python" if dirty else "")


def core_build_info(so_path: str) -> str:
    """Cython and compiler that built the core extension, read from the .so
    (Cython 3 names its shared module ``_cython_X_Y_Z``; GCC and clang leave
    an ident string)."""
    import re

    try:
        blob = Path(so_path).read_bytes()
    except OSError:
        return "unknown"
    cy = re.search(rb"_cython_(\d+)_(\d+)_(\d+)", blob)
    comp = re.search(rb"GCC: \([^)]*\) [\d.]+|clang version [\d.]+", blob)
    parts = []
    if cy:
        parts.append("Cython " + ".".join(g.decode() for g in cy.groups()))
    if comp:
        parts.append(comp.group(0).decode())
    return ", ".join(parts) or "unknown"


def environment(cc: str, c_docs: dict[str, dict], sodium: tuple,
                load: tuple[float, ...]) -> list[str]:
    import zmq

    import zmicro
    from zmicro import _core

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    sys_sodium = c_docs.get("system", {}).get("sodium", {}).get("version")
    path, version = sodium
    lines = [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores "
        f"({affinity} usable), kernel {platform.release()}, "
        f"load average {' / '.join(f'{x:.2f}' for x in load)} at start",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()} "
        f"(core: {'.'.join(map(str, _core.libzmq_version()))}), "
        f"Cython {version_of('Cython')} (installed)",
        f"- zmicro {zmicro.__version__} at {git_revision()}; core extension "
        f"built with {core_build_info(_core.__file__)}",
        f"- C: `{cc} -O2` = {first_line([cc, '--version'])}; "
        f"gcc: {first_line(['gcc', '--version'])}",
        f"- libsodium: Python core and C MAC rows use pyzmq's bundled "
        f"{version or 'n/a'} (`{Path(path).name if path else 'not found'}`); "
        f"system (linked, C-only rows) {sys_sodium or 'not available'}; "
        f"core MACs via libsodium: {zmicro.mac.have_sodium()}",
        f"- Baselines: pycapnp {version_of('pycapnp')}, "
        f"pytest-benchmark {version_of('pytest-benchmark')}",
    ]
    return lines


def table(c_main: dict, c_sys: dict | None, py_rows: list[dict],
          sys_version: str | None) -> list[str]:
    head = ("| Operation | C median ns | C p99 ns | Python median ns "
            "| Python p99 ns | Python − C ns | Python / C |")
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|"]
    by_op: dict[str, list[dict]] = {}
    for r in py_rows:
        by_op.setdefault(r["op"], []).append(r)

    def row(label, c=None, py=None):
        cm = c["median_ns"] if c else None
        cp = c["p99_ns"] if c else None
        pm = py["median_ns"] if py else None
        pp = py["p99_ns"] if py else None
        diff = fmt_ns(pm - cm) if c and py else "—"
        ratio = f"{pm / cm:.1f}×" if c and py and cm > 0 else "—"
        lines.append(f"| {label} | {fmt_ns(cm)} | {fmt_ns(cp)} | {fmt_ns(pm)} "
                     f"| {fmt_ns(pp)} | {diff} | {ratio} |")

    for op in OPS + sorted(set(by_op) - set(OPS)):
        c = c_main["by_op"].get(op)
        rows = by_op.get(op, [])
        ours = [r for r in rows if r["impl"] == "zmicro"]
        baselines = [r for r in rows if r["impl"] != "zmicro"]
        if op in C_ONLY_LABELS and c:
            row(C_ONLY_LABELS[op], c=c)
        for r in ours:
            row(r["label"], c=c, py=r)
            if c_sys and op.startswith("mac.compute."):
                s = c_sys["by_op"].get(op)
                if s:
                    row(f"↳ same in C, system libsodium {sys_version} (`-lsodium`)",
                        c=s)
        if not ours and c and op not in C_ONLY_LABELS:
            row(f"C only: {op}", c=c)
        for r in baselines:
            row(r["label"], py=r)
    return lines


def notes(c_main: dict, smoke: bool, repeat: int, pyzmq_c: bool) -> list[str]:
    out = [
        "Per-call ns: C from batches of ≥ 10 µs (`clock_gettime`), Python from "
        "pytest-benchmark rounds of ≥ 10 µs; median and p99 over batches/rounds. "
        f"C timer overhead: {c_main.get('timer_overhead_ns', '?')} ns per batch. "
        "Python rows include the benchmark loop's own call (see the "
        "`len()` row); GC enabled.",
        ("C MAC rows (`mac.*`) use pyzmq's libsodium, like the Python core; the "
         "↳ rows show the system libsodium. Header rows use no libsodium."
         if pyzmq_c else
         "C MAC rows use the system libsodium: pyzmq's was not found, so C and "
         "Python MAC rows may run different libraries."),
    ]
    if repeat > 1:
        out.append(
            f"{repeat} alternating C / Python runs: each median is the lowest of "
            f"the {repeat} runs' medians (the host has stretches at about half "
            "speed, which a single run can land in, on either side), each p99 "
            "the median of the runs' p99s. Per-run medians are in "
            "`bench/build/micro-*.json`.")
    if smoke:
        out.insert(0, "**SMOKE RUN: a few hundred calls per row; numbers are "
                      "not measurements.**")
    return out


def record(section: str) -> None:
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if RESULTS.exists():
        text = RESULTS.read_text()
        if BEGIN in text and END in text:
            start = text.index(BEGIN)
            stop = text.index(END) + len(END)
            if stop < len(text) and text[stop] == "\n":
                stop += 1
            text = text[:start] + block + text[stop:]
        else:
            text = text.rstrip() + "\n\n## Micro: core pieces\n\n" + block
    else:
        text = "# zmicro benchmark results\n\n## Micro: core pieces\n\n" + block
    RESULTS.write_text(text)
    log(f"recorded in {RESULTS}")


# ---------------------------------------------------------------------------


def run_c_all(exes: dict[str, Path], sodium_path: str | None,
              c_args: list[str]) -> dict[str, dict]:
    """Run the C programs: "system" (all ops, system libsodium) and "pyzmq"
    (MAC ops with pyzmq's libsodium; all ops without a system build)."""
    docs: dict[str, dict] = {}
    if "system" in exes:
        docs["system"] = run_c(exes["system"], c_args)
    if sodium_path:
        only = ["--only", "mac."] if "system" in docs else []
        docs["pyzmq"] = run_c(exes["dlopen"],
                              c_args + ["--sodium", sodium_path, *only])
    if not docs:
        raise SystemExit("error: no libsodium for the C bench (neither the "
                         "system one nor pyzmq's)")
    return docs


def median(values: list[float]) -> float:
    return percentile(sorted(values), 0.5)


def combine_c(reps: list[dict[str, dict]]) -> tuple[dict, dict | None]:
    """(main, system) C results: header rows from whichever program ran them,
    MAC rows from pyzmq's libsodium when found. Over repetitions: the lowest
    of the runs' medians, the median of their p99s."""
    def merged(rep):
        by_op = dict((rep.get("system") or rep["pyzmq"])["by_op"])
        if "pyzmq" in rep:
            by_op.update(rep["pyzmq"]["by_op"])
        return by_op

    def agg(by_ops):
        out = {}
        for op in by_ops[0]:
            rs = [b[op] for b in by_ops if op in b]
            out[op] = dict(rs[0], median_ns=min(r["median_ns"] for r in rs),
                           p99_ns=median([r["p99_ns"] for r in rs]),
                           run_medians=[r["median_ns"] for r in rs])
        return out

    first = reps[0].get("system") or reps[0]["pyzmq"]
    main_doc = dict(first, by_op=agg([merged(r) for r in reps]))
    sys_doc = None
    if "system" in reps[0] and "pyzmq" in reps[0]:
        sys_doc = dict(reps[0]["system"],
                       by_op=agg([r["system"]["by_op"] for r in reps]))
    return main_doc, sys_doc


def combine_py(reps: list[list[dict]]) -> list[dict]:
    """Python rows in the first run's order. Over repetitions: the lowest of
    the runs' medians, the median of their p99s."""
    by_name: dict[str, list[dict]] = {}
    for rows in reps:
        for r in rows:
            by_name.setdefault(r["name"], []).append(r)
    out = []
    for r in reps[0]:
        rs = by_name[r["name"]]
        out.append(dict(r, median_ns=min(x["median_ns"] for x in rs),
                        p99_ns=median([x["p99_ns"] for x in rs]),
                        run_medians=[x["median_ns"] for x in rs]))
    return out


def with_max_time(args: list[str], seconds: float) -> list[str]:
    out = []
    for i, a in enumerate(args):
        if a.startswith("--benchmark-max-time="):
            a = f"--benchmark-max-time={seconds}"
        elif i > 0 and args[i - 1] == "--max-time":
            a = str(seconds)
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a few hundred calls per benchmark, no thresholds "
                             "(< 30 s): checks the harness, measures nothing")
    parser.add_argument("--record", action="store_true",
                        help="write the table into bench/RESULTS.md "
                             "(refused with --smoke)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="run C and Python alternately N times; report "
                             "the lowest of the runs' medians and the median "
                             f"of their p99s (default {FULL_REPEAT}; smoke 1)")
    parser.add_argument("--max-time", type=float, default=None,
                        help="seconds of measurement per operation, side and "
                             "run (default 0.3; smoke 0.005)")
    parser.add_argument("--cc", default=os.environ.get("CC") or "cc",
                        help="C compiler for bench_src (default: $CC or cc)")
    parser.add_argument("--build-dir", type=Path, default=BENCH / "build",
                        help="where the C programs and json results go")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin this run (C and Python) to one CPU")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show pytest-benchmark's own output")
    args = parser.parse_args(argv)
    if args.record and args.smoke:
        parser.error("--record needs a full run, not --smoke")
    if args.repeat is None:
        args.repeat = 1 if args.smoke else FULL_REPEAT
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    t0 = time.monotonic()
    c_args, py_args = SMOKE if args.smoke else FULL
    if args.max_time is not None:
        c_args = with_max_time(c_args, args.max_time)
        py_args = with_max_time(py_args, args.max_time)
    build = args.build_dir.resolve()
    load = os.getloadavg()
    if not args.smoke and load[0] > 0.5:
        log(f"warning: load average {load[0]:.2f}: other work is running, "
            f"numbers will be noisy")

    exes = build_c(args.cc, build)
    for old in build.glob("micro-python-*.json"):
        old.unlink()
    sodium = pyzmq_sodium()
    c_reps: list[dict[str, dict]] = []
    py_reps: list[list[dict]] = []
    for i in range(args.repeat):
        if args.repeat > 1:
            log(f"-- run {i + 1}/{args.repeat}")
        c_reps.append(run_c_all(exes, sodium[0], c_args))
        if i == 0:
            main0, _ = combine_c(c_reps)
            cross_check(main0, list(c_reps[0].values()))
        py_reps.append(run_pytest(build / f"micro-python-{i + 1}.json",
                                  py_args, args.verbose)["rows"])
    with open(build / "micro-c.json", "w") as f:
        json.dump(c_reps, f, indent=1)
    c_main, c_sys = combine_c(c_reps)
    py_rows = combine_py(py_reps)

    sys_version = c_reps[0].get("system", {}).get("sodium", {}).get("version")
    lines = [
        *environment(args.cc, c_reps[0], sodium, load),
        "",
        *table(c_main, c_sys, py_rows, sys_version),
        "",
        "\n\n".join(notes(c_main, args.smoke, args.repeat,
                           "pyzmq" in c_reps[0])),
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    log(f"raw results in {build}: micro-c.json, micro-python-*.json; "
        f"took {time.monotonic() - t0:.1f} s")
    if args.record:
        record(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
