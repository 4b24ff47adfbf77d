"""Benchmark of a run's files on PostgreSQL (not a test): the saver's peak RSS while it writes them from the tables.

One run of ``--users`` users (dummyjson's shape, one in ten broken) is loaded into a private PostgreSQL (testbed);
then a fresh process writes the run's three files from the tables as the finisher does (``write_run_files``), once
reading the rows through the adapter's server-side cursor (``stream``, as the saver does) and once through a plain
``execute`` (the whole result fetched, as before), and prints its peak RSS (``VmHWM``) before and after writing.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import testbed.postgres as tbpg
from etl_common.db import parse_url
from saver.store import Store

RUN_ID = "20260101_030000_bench0"


def vm_hwm_kib() -> int:
    """This process's peak resident set size so far, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def write(url: str, how: str) -> None:
    """Write the run's files (in this process) reading the rows the ``how`` way; print peak RSS around it."""
    from saver.files import write_run_files

    store = Store(parse_url(url))
    if how == "execute":
        store.conn.stream = None  # type: ignore[attr-defined]  # saver.files then reads with a plain execute
    before = vm_hwm_kib()
    with tempfile.TemporaryDirectory() as tmp:
        out = write_run_files(store.conn, store.run(RUN_ID), tmp)
    records = {kind: f["records"] for kind, f in out.items()}
    print(f"  {how:8} peak RSS {before / 1024:6.1f} MiB before writing, {vm_hwm_kib() / 1024:6.1f} MiB after {records}")
    store.close()


def main() -> None:
    """Load one run, then write its files both ways in fresh processes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--write", nargs=2, metavar=("URL", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write(*args.write)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_pg_load import RUN_TS, pages

    server = tbpg.start_postgres()
    try:
        url = server.create_database()
        store = Store(parse_url(url))
        store.apply_event({"type": "run_started", "run_id": RUN_ID, "run_ts": RUN_TS, "trigger": "bench"})
        for start in range(
            0, args.users, 10_000
        ):  # transformed 10,000 at a time: this process's memory is not measured
            run = pages(min(10_000, args.users - start), 100)
            for p in run:
                p["page"] += start // 100
                for v in p["raw"]:
                    if isinstance(v, dict) and isinstance(v.get("id"), int):
                        v["id"] += start
            for i in range(0, len(run), 10):
                store.load_pages(run[i : i + 10])
        store.close()
        print(f"{args.users:,} users loaded; writing the run's files in a fresh process each:")
        for how in ("stream", "execute"):
            subprocess.run([sys.executable, __file__, "--write", url, how], check=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
