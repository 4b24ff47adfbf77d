"""Benchmark of the read API (not a test): a 100,000-user database served by 1 and 2 uvicorn workers, loaded with wrk.

The database is built by the saver's own code (``Store.load_pages``) from the transformer's output
for generated users, which is what a real run writes, without the time of a real run. Prints
requests/s and p50/p99 latency per route. Needs ``wrk`` (apt-get install wrk).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import testbed as tb
from dummyjson.users import make_user
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

ROOT = tb.ROOT

TOKEN = "bench-token"  # noqa: S105 (a throwaway token of a local benchmark)
RUN_TS = "20260101_030000"
RUN_ID = f"{RUN_TS}_bench0"


def build_db(path: Path, users: int, page_size: int = 100) -> float:
    """A succeeded run of ``users`` users, loaded page by page as the saver does; returns seconds taken."""
    started = time.monotonic()
    store = Store(str(path))
    store.apply_event(
        {
            "type": "run_started",
            "run_id": RUN_ID,
            "run_ts": RUN_TS,
            "trigger": "bench",
            "started_at": "2026-01-01T03:00:00Z",
        }
    )
    departments = load_departments()
    pages = (users + page_size - 1) // page_size
    batch = []
    for page in range(pages):
        records = [make_user(i + 1) for i in range(page * page_size, min(users, (page + 1) * page_size))]
        batch.append({"run_id": RUN_ID, "run_ts": RUN_TS, "page": page, **transform_page(records, departments)})
        if len(batch) == 20 or page == pages - 1:
            store.load_pages(batch)
            batch = []
    store.apply_event(
        {
            "type": "phase1_complete",
            "run_id": RUN_ID,
            "run_ts": RUN_TS,
            "pages": pages,
            "records": users,
            "total": users,
        }
    )
    store.complete_runs()
    store.mark(RUN_ID, "succeeded")
    store.close()
    return time.monotonic() - started


# Random pages, each with a unique nonce so the response cache never answers: the uncached cost.
_RANDOM_OFFSET = """
math.randomseed(os.time())
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "{path}&offset=" .. math.random(0, {pages}) * 50 .. "&nonce=" .. counter)
end
"""


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {TOKEN}"]
    if script:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": _ms(out, "50%"), "p99": _ms(out, "99%"), "non2xx": int(errors.group(1)) if errors else 0}


def _ms(out: str, pct: str) -> float:
    value, unit = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def serve(db: Path, workers: int, logdir: Path) -> tuple[tb.Proc, int]:
    port = tb.free_port()
    env = {
        "ETL_DB_PATH": str(db),
        "ETL_API_PORT": str(port),
        "ETL_API_WORKERS": str(workers),
        "ETL_API_TOKEN": TOKEN,
        "ETL_API_AUTH": "token",
        "ETL_LOG_LEVEL": "WARNING",
    }
    proc = tb.start_service("api", env, logdir)
    tb.wait_port(port, proc=proc.popen)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--db", help="reuse this database file (built there first when missing)")
    args = parser.parse_args()
    if not tb.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "data.db"
        if db.exists():
            print(f"database: reusing {db} ({db.stat().st_size / 1e6:.0f} MB)")
        else:
            took = build_db(db, args.users)
            print(
                f"database: {args.users:,} users in one run, built with Store.load_pages from transform_page "
                f"output in {took:.1f} s ({db.stat().st_size / 1e6:.0f} MB)"
            )
        script = Path(tmp) / "random_offset.lua"
        path = f"/data/processed_users?run_id={RUN_ID}&limit=50"
        script.write_text(_RANDOM_OFFSET.replace("{path}", path).replace("{pages}", str(args.users // 50 - 1)))
        routes = [("/etl_runs", None), (path, None), (path + " (random pages, uncached)", script), ("/summary", None)]
        print(
            f"wrk: 1 thread, {args.connections} connections, {args.seconds} s per route, loopback, "
            f"{_cpus()} CPUs shared by wrk and the API"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)")
        print(f"{'workers':>7}  {'route':<80} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'bytes':>6} {'CPU ms/req':>10}")
        for workers in [int(w) for w in args.workers.split(",")]:
            proc, port = serve(db, workers, Path(tmp) / f"logs{workers}")
            try:
                base = f"http://127.0.0.1:{port}"
                for label, lua in routes:
                    url = base + label.split(" ")[0]
                    first = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                    first.raise_for_status()
                    wrk(url, 2, args.connections, lua)  # warm-up: connections, caches, page cache
                    cpu_before = _tree_cpu_s(proc.popen.pid)
                    r = wrk(url, args.seconds, args.connections, lua)
                    cpu_ms = (_tree_cpu_s(proc.popen.pid) - cpu_before) * 1000 / max(1, r["rps"] * args.seconds)
                    note = f"  ({r['non2xx']} non-2xx!)" if r["non2xx"] else ""
                    print(
                        f"{workers:>7}  {label:<80} {r['rps']:>7.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} "
                        f"{len(first.content):>6} {cpu_ms:>10.3f}{note}",
                        flush=True,
                    )
            finally:
                proc.stop()
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children: the API's own cost per request."""
    total, parents = 0.0, {pid}
    stats = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stats.append((int(d.name), (d / "stat").read_text().rsplit(")", 1)[1].split()))
            except OSError:
                continue
    for p, fields in stats:
        if p == pid or int(fields[1]) in parents:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


if __name__ == "__main__":
    sys.exit(main())
