"""Wheels: does portability cost speed, and what does ``import zmicro`` cost?

Two measurements of the artefacts ``scripts/build-wheels.sh`` puts in dist/:

1. **zig vs local.** The manylinux_2_17 wheel (zig cc, glibc 2.17) against a
   wheel of the same sdist built here the ordinary way (``pip wheel`` with
   this machine's compiler and CPython's flags), each in its own venv of the
   same Python, on the end-to-end latency benchmark (bench/e2e: its
   contenders, servers and client runs). Both servers stay up; every round
   runs each contender once per wheel, the order swapped every round, so a
   slow stretch of the shared host hits both. Reported: each wheel's median
   and best p50 over the rounds, the **median over rounds of the per-round
   ratio** zig / local (the target: at most 1.05) and the best rounds' ratio.
2. **import time** of the zig wheel, for each CPython it was built for: in
   fresh processes, ``python -X importtime -c "import zmicro"``, the
   cumulative time of the ``zmicro`` line (zmicro and everything it imports:
   pyzmq, msgspec, ...); median and lowest over ``--imports`` processes.

    python bench/wheels/run.py              # both, about 4 minutes
    python bench/wheels/run.py --record     # then update RESULTS.md
    python bench/wheels/run.py --repeat 1 --iterations 500   # quick look
    python bench/wheels/run.py --smoke      # CI: the harness runs, no measurement

Run it with any of the wheels' Pythons (the comparison uses the one running
it); venvs and the local wheel go to bench/build/wheels/.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH / "e2e"))
import run as e2e  # noqa: E402  (bench/e2e/run.py: Server, run_client, ...)
from contenders import Env, RunParams, by_name  # noqa: E402

BEGIN = "<!-- wheels:begin: written by bench/wheels/run.py --record -->"
END = "<!-- wheels:end -->"
HEADING = "## Wheels: the zig-built manylinux wheel vs a local build; import time"
TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def one(pattern: str) -> Path:
    found = sorted(glob.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one file matching {pattern}, found {found}: "
                         "run scripts/build-wheels.sh first")
    return Path(found[0])


def venv_with(python: str, where: Path, wheel: Path) -> str:
    """A fresh venv at ``where`` with ``wheel`` and its dependencies."""
    sh([python, "-m", "venv", "--clear", str(where)])
    vpy = str(where / "bin" / "python")
    sh([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "--only-binary=:all:", str(wheel)])
    return vpy


def local_wheel(sdist: Path, out: Path) -> Path:
    """The same sdist built here as a user with a compiler would."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("zmicro-*.whl"):
        old.unlink()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CC", "CFLAGS", "LDSHARED", "LDFLAGS")}
    e2e.log(f"building the local wheel from {sdist.name} ({sys.executable})")
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir",
        "--disable-pip-version-check", "-w", str(out), str(sdist)], env=env)
    return one(str(out / f"zmicro-*-{TAG}-*.whl"))


def compare(args, build: Path) -> dict:
    sdist = one(str(ROOT / "dist" / "zmicro-*.tar.gz"))
    wheels = {
        "zig": args.zig_wheel or one(str(ROOT / "dist" / f"zmicro-*-{TAG}-*manylinux_2_17_x86_64.whl")),
        "local": local_wheel(sdist, build / "local"),
    }
    base = getattr(sys, "_base_executable", sys.executable)
    pythons = {k: venv_with(base, build / f"venv-{k}", w) for k, w in wheels.items()}
    names = args.contenders.split(",")
    servers: dict[tuple[str, str], e2e.Server] = {}
    p50: dict[tuple[str, str], list[float]] = {}
    (build / "logs").mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            for k, vpy in pythons.items():
                contender = by_name()[name]
                env = Env(python=vpy, build=build / k)
                (build / k).mkdir(parents=True, exist_ok=True)
                why, _ = contender.probe(env)
                if why:
                    raise SystemExit(f"{name} ({k} wheel) cannot run: {why}")
                # One log per contender and wheel.
                logs = build / "logs" / k
                logs.mkdir(parents=True, exist_ok=True)
                server = e2e.Server(contender, env, logs)
                server.start(30)
                servers[name, k] = server
                p50[name, k] = []
        for r in range(args.repeat):
            order = list(pythons) if r % 2 == 0 else list(reversed(pythons))
            for name in names:
                for k in order:
                    params = RunParams(mode="latency", size=args.size,
                                       iterations=args.iterations, warmup=args.warmup,
                                       out=str(build / f"samples-{k}.bin"))
                    run = e2e.run_client(servers[name, k], params)
                    p50[name, k].append(run.p50_ns)
            e2e.log(f"round {r + 1}/{args.repeat}: " + ", ".join(
                f"{n} {k} {p50[n, k][-1] / 1000:.1f} µs" for n in names for k in pythons))
    finally:
        for s in servers.values():
            s.stop()
    rows = []
    for name in names:
        z, lo = p50[name, "zig"], p50[name, "local"]
        ratios = [a / b for a, b in zip(z, lo)]
        rows.append({
            "contender": name,
            "zig_median": statistics.median(z), "zig_best": min(z),
            "local_median": statistics.median(lo), "local_best": min(lo),
            "ratio_median": statistics.median(ratios), "ratio_best": min(z) / min(lo),
            "ratios": ratios,
        })
    sizes = {k: w.stat().st_size for k, w in wheels.items()}
    return {"rows": rows, "wheels": {k: w.name for k, w in wheels.items()},
            "sizes": sizes}


def import_times(args, build: Path) -> list[dict]:
    out = []
    for whl in sorted((ROOT / "dist").glob("zmicro-*manylinux_2_17_x86_64.whl")):
        tag = re.search(r"-cp3(\d+)-", whl.name).group(1)
        version = f"3.{tag}"
        found = subprocess.run(
            ["bash", "-c", f"source {ROOT}/scripts/_pythons.sh; find_python {version}"],
            capture_output=True, text=True).stdout.strip()
        if not found:
            e2e.log(f"no CPython {version} here: import time of {whl.name} not measured")
            continue
        vpy = venv_with(found, build / f"venv-import-{version}", whl)
        env = {**os.environ, "ZMICRO_HOME": str(build / "zmicro-home")}
        sh([vpy, "-c", "import zmicro"], cwd=build, env=env)   # compile .pyc once
        ms, wall = [], []
        for _ in range(args.imports):
            err = sh([vpy, "-X", "importtime", "-c", "import zmicro"],
                     cwd=build, env=env).stderr
            # "import time: self [us] | cumulative | imported package"
            line = [ln for ln in err.splitlines() if ln.rstrip().endswith("| zmicro")][-1]
            ms.append(int(line.split("|")[1]) / 1000)
            # Wall clock, without importtime's own overhead: a process that
            # imports zmicro minus one that does nothing, back to back.
            t = []
            for code in ("import zmicro", "pass"):
                t0 = time.perf_counter()
                sh([vpy, "-c", code], cwd=build, env=env)
                t.append(time.perf_counter() - t0)
            wall.append((t[0] - t[1]) * 1000)
        out.append({"python": version,
                    "version": sh([vpy, "-c", "import platform; print(platform.python_version())"]).stdout.strip(),
                    "median_ms": statistics.median(ms), "best_ms": min(ms), "n": len(ms),
                    "wall_median_ms": statistics.median(wall), "wall_best_ms": min(wall)})
        e2e.log(f"import zmicro, CPython {version}: median {out[-1]['median_ms']:.1f} ms")
    return out


def report(args, cmp: dict | None, imports: list[dict]) -> str:
    lines = [f"Recorded {datetime.date.today()} by `python bench/wheels/run.py"
             f"{' ' + ' '.join(args.argv) if args.argv else ''}`, "
             f"CPU {e2e.cpu_model()}, {os.cpu_count()} cores, load "
             f"{os.getloadavg()[0]:.2f} at the end, git {e2e.git_revision()}.", ""]
    if cmp:
        lines += [
            f"**zig vs local** (CPython {sys.version.split()[0]}): "
            f"`{cmp['wheels']['zig']}` ({cmp['sizes']['zig'] // 1024} KiB, zig cc "
            f"-target x86_64-linux-gnu.2.17, CPython's -O3 flags, stripped) against "
            f"`{cmp['wheels']['local']}` ({cmp['sizes']['local'] // 1024} KiB, "
            f"`pip wheel` of the same sdist with this machine's compiler, not stripped). "
            f"Echo, {args.size} B, latency: {args.iterations} timed calls after "
            f"{args.warmup} per run, {args.repeat} rounds, the order of the two "
            "wheels swapped every round; both servers up throughout.", "",
            "| contender | zig p50 median (best) | local p50 median (best) "
            "| zig / local, median of rounds | best rounds | target ≤ 1.05 |",
            "|---|---|---|---|---|---|"]
        for r in cmp["rows"]:
            ok = "met" if r["ratio_median"] <= 1.05 else "**missed**"
            lines.append(
                f"| `{r['contender']}` | {r['zig_median'] / 1000:.1f} µs "
                f"({r['zig_best'] / 1000:.1f}) | {r['local_median'] / 1000:.1f} µs "
                f"({r['local_best'] / 1000:.1f}) | {r['ratio_median']:.3f} "
                f"| {r['ratio_best']:.3f} | {ok} |")
        lines += ["", "Per-round ratios: " + "; ".join(
            f"`{r['contender']}` " + ", ".join(f"{x:.3f}" for x in r["ratios"])
            for r in cmp["rows"]), ""]
    if imports:
        lines += [
            f"**import zmicro** (zig wheel, fresh venv, {imports[0]['n']} fresh "
            "processes per Python): `python -X importtime -c \"import zmicro\"`, the "
            "cumulative time of the `zmicro` line (zmicro and what it imports: pyzmq, "
            "msgspec, ...; importtime's own bookkeeping included), and the wall clock "
            "of `python -c \"import zmicro\"` minus that of `python -c pass`, run "
            "back to back (what a user's start-up pays).", "",
            "| CPython | importtime median (lowest) | wall clock median (lowest) |",
            "|---|---|---|"]
        for i in imports:
            lines.append(f"| {i['version']} | {i['median_ms']:.1f} ms ({i['best_ms']:.1f}) "
                         f"| {i['wall_median_ms']:.1f} ms ({i['wall_best_ms']:.1f}) |")
    return "\n".join(lines) + "\n"


def record(text: str) -> None:
    path = BENCH / "RESULTS.md"
    doc = path.read_text()
    block = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    if BEGIN in doc and END in doc:
        start, stop = doc.index(BEGIN), doc.index(END) + len(END) + 1
        doc = doc[:start] + block + doc[stop:]
    else:
        doc = doc.rstrip() + f"\n\n{HEADING}\n\n{block}"
    path.write_text(doc)
    e2e.log(f"recorded in {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contenders", default="zmicro-sync,zmicro-secure-sync",
                   help="bench/e2e latency contenders to compare (default: %(default)s)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=9, help="rounds (default %(default)s)")
    p.add_argument("--imports", type=int, default=21,
                   help="fresh processes per Python for the import time")
    p.add_argument("--zig-wheel", type=Path, default=None,
                   help="compare this wheel instead of dist/'s manylinux one "
                        "(e.g. one built with other flags)")
    p.add_argument("--only", choices=("compare", "import"), default=None)
    p.add_argument("--record", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="one short round and two imports per Python: keeps the harness "
                        "from rotting (CI); the numbers are not measurements")
    args = p.parse_args(argv)
    if args.smoke:
        if args.record:
            p.error("--smoke runs are not measurements: no --record")
        args.repeat, args.iterations, args.warmup, args.imports = 1, 200, 50, 2
    args.argv = sys.argv[1:] if argv is None else argv
    build = BENCH / "build" / "wheels"
    build.mkdir(parents=True, exist_ok=True)
    cmp = compare(args, build) if args.only in (None, "compare") else None
    imports = import_times(args, build) if args.only in (None, "import") else []
    text = report(args, cmp, imports)
    if args.smoke:
        text = "**SMOKE RUN: one short round; the numbers are not measurements.**\n\n" + text
    print(text)
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
