"""`make bench-compare`: this pipeline and dlt (REST API source into SQLite) on the same local source, side by side.

A benchmark, not a test. For each size it alternates pipeline, dlt, pipeline, dlt, ... : each pair starts one
source (`python -m dummyjson --count N --bad-every 10 --pool 1000`, as `make bench`), runs the whole pipeline on
it (scripts/bench.py's Stack: Redis, extractor, transformer(s), saver, SFTP; trigger -> `succeeded`), stops the
pipeline's processes, then runs dlt on the very same source (scripts/bench_dlt.py, in its own venv
`.run/bench-dlt-venv` with dlt pinned, created here when missing; dlt is never a dependency of the project).
Prints users/s, CPU per user (from /proc and getrusage, robust to other load) and peak RSS (VmHWM) for both,
and the load average seen. Environment: BENCH_COMPARE_SIZES ("100000"), BENCH_COMPARE_REPEAT (3),
BENCH_PAGE_SIZE (100), BENCH_POOL (1000), BENCH_TRANSFORMERS (1).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench  # scripts/bench.py: run as a script, its folder is on the path

import testbed as tb

DLT_PINS = ("dlt[sqlalchemy]==1.31.0", "sqlalchemy==2.1.9")
DLT_VERSION = "1.31.0"
VENV = tb.ROOT / ".run" / "bench-dlt-venv"
DLT_SCRIPT = Path(__file__).resolve().parent / "bench_dlt.py"


def dlt_python() -> str:
    """The dlt venv's interpreter; the venv is created (pinned versions) when missing or on another version."""
    py = VENV / "bin" / "python"
    if py.exists():
        probe = subprocess.run(
            [str(py), "-c", "import dlt; print(dlt.__version__)"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0 and probe.stdout.strip() == DLT_VERSION:
            return str(py)
    print(f"creating {VENV} with {', '.join(DLT_PINS)} (benchmark only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *DLT_PINS], check=True)
    return str(py)


def run_dlt(py: str, stack: bench.Stack, n: int, page_size: int) -> dict:
    """dlt on the stack's source (the pipeline's processes stopped): rate, CPU per user, peak RSS."""
    base = stack.base / "dlt"
    base.mkdir()
    src = stack.roles["source"].popen.pid
    src0, load0 = bench.cpu_s(src), os.getloadavg()[0]
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    done = subprocess.run(
        [py, str(DLT_SCRIPT), stack.source_url, str(base / "dlt.db"), str(base), str(page_size)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dlt failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "rate": n / out["seconds"],
        "seconds": out["seconds"],
        "rows": out["rows"],
        "cpu_us": out["cpu_s"] * 1e6 / n,
        "source_cpu_us": (bench.cpu_s(src) - src0) * 1e6 / n,
        "rss_mb": out["peak_rss_mb"],
        "load": (load0, os.getloadavg()[0]),
    }


def pair(py: str, sftp: tb.Sftp, work: Path, n: int, page_size: int, pool: int, transformers: int) -> tuple:
    """One pipeline run then one dlt run on the same source process; both results."""
    base = Path(tempfile.mkdtemp(prefix=f"cmp{n}-", dir=work))
    stack = bench.Stack(base, sftp, n, transformers, page_size, pool)
    try:
        mine = bench.measure(stack, n)
        for role in [r for r in stack.roles if r != "source"]:
            stack.roles[role].stop()
        theirs = run_dlt(py, stack, n, page_size)
    finally:
        stack.close()
        bench._clean(base, sftp)
        # dlt's database and its load packages are data (hundreds of MB at 1,000,000), not logs.
        for f in (base / "dlt").glob("*.db"):
            f.unlink()
        shutil.rmtree(base / "dlt" / "pipelines", ignore_errors=True)
    return mine, theirs


def pipeline_figures(r: dict) -> dict:
    """The pipeline's figures in the comparison's terms (the source counted apart, as for dlt)."""
    services = [k for k in r["peaks"] if k not in ("redis", "source", "redis used_memory_peak")]
    return {
        "rate": r["rate"],
        "cpu_us": sum(v for k, v in r["cpu"].items() if k != "source"),
        "source_cpu_us": r["cpu"]["source"],
        "rss_mb": max(r["peaks"][k] for k in services),
        "redis_mb": r["peaks"]["redis"],
        "tail": r["tail_share"],
        "load": r["load"],
    }


def _row(name: str, runs: list[dict], extra: str = "") -> str:
    rates, cpus = [r["rate"] for r in runs], [r["cpu_us"] for r in runs]
    loads = [x for r in runs for x in r["load"]]
    return (
        f"| {name} | **{statistics.median(rates):,.0f}** ({'; '.join(f'{x:,.0f}' for x in rates)}) "
        f"| **{statistics.median(cpus):.0f}** ({'; '.join(f'{x:.0f}' for x in cpus)}) "
        f"| {max(r['rss_mb'] for r in runs):.0f}{extra} "
        f"| {statistics.median(r['source_cpu_us'] for r in runs):.0f} | {min(loads):.1f} to {max(loads):.1f} |"
    )


def main() -> int:
    sizes = [int(x) for x in os.environ.get("BENCH_COMPARE_SIZES", "100000").split(",") if x.strip()]
    repeat = int(os.environ.get("BENCH_COMPARE_REPEAT", 3))
    page_size, pool = int(os.environ.get("BENCH_PAGE_SIZE", 100)), int(os.environ.get("BENCH_POOL", 1000))
    transformers = int(os.environ.get("BENCH_TRANSFORMERS", 1))
    py = dlt_python()
    print(
        f"bench-compare: sizes {sizes}, repeat {repeat}, page size {page_size}, source pool {pool}, "
        f"dlt {DLT_VERSION}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="etl-bench-compare-"))
    sftp = tb.start_sftp(work / "sshd", work / "ssh_keys", work / "upload")
    table = []
    try:
        for n in sizes:
            mine, theirs = [], []
            for i in range(repeat):
                r, d = pair(py, sftp, work, n, page_size, pool, transformers)
                mine.append(pipeline_figures(r))
                theirs.append(d)
                p = mine[-1]
                print(
                    f"  N={n:,} pair {i + 1}/{repeat}: pipeline {r['status']} {p['rate']:,.0f} users/s, "
                    f"{p['cpu_us']:.0f} us/user (+ source {p['source_cpu_us']:.0f}), peak RSS {p['rss_mb']:.0f} MB "
                    f"(redis {p['redis_mb']:.0f}), tail {p['tail']:.0%}, load {p['load'][0]:.1f}->{p['load'][1]:.1f}"
                    f" | dlt {d['rate']:,.0f} users/s, {d['cpu_us']:.0f} us/user (+ source "
                    f"{d['source_cpu_us']:.0f}), peak RSS {d['rss_mb']:.0f} MB, {d['rows']:,} rows, "
                    f"load {d['load'][0]:.1f}->{d['load'][1]:.1f}",
                    flush=True,
                )
                print(
                    "    pipeline CPU per user by process (us): "
                    + ", ".join(f"{k} {v:.0f}" for k, v in r["cpu"].items())
                    + "; stage ends (s): "
                    + ", ".join(f"{k} {v}" for k, v in r["stages"].items()),
                    flush=True,
                )
            redis = max(r["redis_mb"] for r in mine)
            table += [
                _row(f"{n:,}: this pipeline", mine, f" per service (Redis {redis:.0f})"),
                _row(f"{n:,}: dlt {DLT_VERSION}", theirs),
            ]
    finally:
        sftp.stop()
    print(f"\nside by side (median of {repeat}, each run in brackets; page {page_size})")
    print("| Run | users/s | CPU per user (µs) | peak RSS (MB) | source CPU per user (µs) | load average |")
    print("|---|---|---|---|---|---|")
    for line in table:
        print(line)
    print(f"(work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
