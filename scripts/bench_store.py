"""Benchmark of the saver's store (not a test): CPU per user of loading pages, and database bytes per user.

Pages of the source's users (one in ten broken) go through the transformer's own code first (not timed); then
``Store.load_pages`` loads them in batches of ``--batch`` pages as the saver does (one transaction each), with the
run files appended as pages commit (the saver's default without encryption). CPU is ``process_time`` (robust to
other load on the machine); bytes are the database file after a checkpoint, divided by the users loaded.
"""

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from dummyjson.server import Source
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN_TS = "20260101_030000"
RUN_ID = f"{RUN_TS}_bench0"


def pages(users: int, page_size: int) -> list[dict]:
    """The transformer's pages of one run of ``users`` users."""
    source, departments = Source(users, 0, 10, pool=1000), load_departments()
    return [
        {
            "run_id": RUN_ID,
            "run_ts": RUN_TS,
            "page": page,
            **transform_page([source.user(i) for i in range(start, min(users, start + page_size))], departments),
        }
        for page, start in enumerate(range(0, users, page_size))
    ]


def main() -> None:
    """Print CPU per user and bytes per user of one loaded run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    run = pages(args.users, args.page_size)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "data.db"
        store = Store(str(db), str(Path(tmp) / "files"))
        store.apply_event({"type": "run_started", "run_id": RUN_ID, "run_ts": RUN_TS, "trigger": "bench"})
        c0 = time.process_time()
        for i in range(0, len(run), args.batch):
            store.load_pages(run[i : i + args.batch])
        cpu = time.process_time() - c0
        store.close()
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            valid = conn.execute("SELECT count(*) FROM processed_users").fetchone()[0]
        size = db.stat().st_size
    print(
        f"{args.users:,} users ({valid:,} valid), batches of {args.batch} pages of {args.page_size}: "
        f"load CPU {cpu * 1e6 / args.users:.1f} us per user; database {size:,} bytes = {size / args.users:,.0f} "
        "bytes per user"
    )


if __name__ == "__main__":
    main()
