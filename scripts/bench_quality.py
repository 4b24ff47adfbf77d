"""Benchmark of the data-quality report and the exports (not a test): time and peak RSS at 100,000 users.

A database of one run (every 20th user broken) is built by the saver's own code from the
transformer's output, as a real run writes it. Then, each in a fresh process so its peak RSS is its
own: the saver's report (``saver.quality.compute``), and the API (``python -m api``, one worker)
streaming ``/data/{table}.csv`` and ``.parquet`` of the whole run to a client that discards the bytes.
Prints seconds, bytes and peak RSS (VmHWM) next to the RSS right after start-up; the target is a
peak of at most 150 MB per process.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import testbed as tb
from dummyjson.server import Source
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

TOKEN = "bench-token"  # noqa: S105 (a throwaway token of a local benchmark)
RUN_TS = "20260101_030000"
RUN_ID = f"{RUN_TS}_bench0"
LIMIT_MB = 150


def build_db(path: Path, users: int, bad_every: int, page_size: int = 100) -> float:
    """A loaded run of ``users`` users, page by page as the saver loads them; returns seconds taken."""
    started = time.monotonic()
    source = Source(users, 0, bad_every, pool=1000)
    store = Store(str(path))
    store.apply_event({"type": "run_started", "run_id": RUN_ID, "run_ts": RUN_TS, "trigger": "bench"})
    departments = load_departments()
    pages = (users + page_size - 1) // page_size
    batch = []
    for page in range(pages):
        records = [source.user(i) for i in range(page * page_size, min(users, (page + 1) * page_size))]
        batch.append({"run_id": RUN_ID, "run_ts": RUN_TS, "page": page, **transform_page(records, departments)})
        if len(batch) == 20 or page == pages - 1:
            store.load_pages(batch)
            batch = []
    store.apply_event({"type": "phase1_complete", "run_id": RUN_ID, "run_ts": RUN_TS, "pages": pages, "records": users})
    store.complete_runs()
    store.close()
    return time.monotonic() - started


def _vm_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def report_child(db: str) -> None:
    """Runs in its own process: compute the report, print timings and memory as JSON."""
    from saver import quality  # imported here so the start-up RSS includes pandas, as in the saver

    start_kb = _vm_kb("self", "VmRSS")
    t0 = time.monotonic()
    report = quality.compute(db, RUN_ID)
    seconds = time.monotonic() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "start_kb": start_kb, "peak_kb": peak_kb, "records": report["records"]}))


def bench_report(db: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--report-child", str(db)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_export(db: Path, table: str, fmt: str, logdir: Path) -> dict:
    """One fresh API process streams one export of the whole run; its time, size and peak RSS."""
    port = tb.free_port()
    env = {
        "ETL_DB_PATH": str(db),
        "ETL_API_PORT": str(port),
        "ETL_API_WORKERS": "1",
        "ETL_API_TOKEN": TOKEN,
        "ETL_API_AUTH": "token",
        "ETL_LOG_LEVEL": "WARNING",
    }
    proc = tb.start_service("api", env, logdir, log_name=f"api-{table}-{fmt}")
    try:
        tb.wait_port(port, proc=proc.popen)
        url = f"http://127.0.0.1:{port}/data/{table}.{fmt}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        httpx.get(f"http://127.0.0.1:{port}/etl_runs", headers=headers).raise_for_status()  # warm: modules, db
        start_kb = _vm_kb(proc.popen.pid, "VmRSS")
        size = 0
        t0 = time.monotonic()
        with httpx.stream("GET", url, params={"run_id": RUN_ID}, headers=headers, timeout=120) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                size += len(chunk)
        seconds = time.monotonic() - t0
        return {"seconds": seconds, "bytes": size, "start_kb": start_kb, "peak_kb": _vm_kb(proc.popen.pid, "VmHWM")}
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--bad-every", type=int, default=20)
    parser.add_argument("--db", help="reuse this database file (built there first when missing)")
    parser.add_argument("--report-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report_child:
        report_child(args.report_child)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "data.db"
        if not db.exists():
            print(f"building a run of {args.users:,} users ({db}) ...", flush=True)
            print(f"  built in {build_db(db, args.users, args.bad_every):.1f} s", flush=True)
        mb = 1024.0
        rows = []
        r = bench_report(db)
        rows.append(("quality report (saver)", r["seconds"], None, r["start_kb"] / mb, r["peak_kb"] / mb))
        for table in ("processed_users", "raw_users"):
            for fmt in ("csv", "parquet"):
                e = bench_export(db, table, fmt, Path(tmp) / "logs")
                rows.append(
                    (f"GET /data/{table}.{fmt}", e["seconds"], e["bytes"], e["start_kb"] / mb, e["peak_kb"] / mb)
                )
        print(f"\n{args.users:,} users, every {args.bad_every}th broken; peak RSS target <= {LIMIT_MB} MB per process")
        print(f"{'what':36} {'seconds':>8} {'MB out':>8} {'RSS start MB':>13} {'peak RSS MB':>12}")
        worst = 0.0
        for name, seconds, size, start, peak in rows:
            out = f"{size / 1e6:8.1f}" if size is not None else f"{'':8}"
            print(f"{name:36} {seconds:8.2f} {out} {start:13.1f} {peak:12.1f}")
            worst = max(worst, peak)
        print(f"\nhighest peak RSS: {worst:.1f} MB ({'within' if worst <= LIMIT_MB else 'OVER'} {LIMIT_MB} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
