"""Benchmark of bulk loading on PostgreSQL (not a test): saver and server CPU per user of each way to insert rows.

Pages of the source's users (dummyjson's shape, one in ten broken) go through the transformer's own code first (not
timed); then ``Store.load_pages`` loads them in batches of ``--batch`` pages as the saver does (one transaction
each) on a private PostgreSQL (testbed), once per way of inserting the rows, the ways taking turns ``--repeat``
times, each in a fresh database. CPU, not wall-clock: the saver's is ``process_time``; the server's is its backend
process's user+system time (``/proc/<pid>/stat``). Ways: ``copy`` (saver.pgconn: COPY text into a staging table,
one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` per table at COMMIT), ``copy-binary`` (the same in COPY's binary
format), ``executemany`` (one pipelined ``executemany`` per table and page) and ``pipeline`` (the same with the
whole transaction in one pipeline: one sync per page).
"""

import argparse
import os
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

import testbed.postgres as tbpg
from dummyjson.server import Source
from etl_common.db import parse_url, qmark_to_format
from saver import pgconn
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN_TS = "20260101_030000"
RUN_ID = f"{RUN_TS}_bench0"
WAYS = ("executemany", "pipeline", "copy", "copy-binary")


def pages(users: int, page_size: int) -> list[dict[str, Any]]:
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


def _executemany(self: pgconn.Connection, sql: str, seq: Iterable[Sequence[Any]]) -> pgconn.Cursor:
    """The adapter's executemany before COPY: psycopg pipelines the statements of one call."""
    cursor = self._cursor()
    cursor.executemany(qmark_to_format(sql), [tuple(p) for p in seq])
    return pgconn.Cursor(cursor)


def _pipelined_execute(original: Any) -> Any:
    """execute with BEGIN ... COMMIT in one pipeline, synced only where the saver reads a result (the ledger)."""

    def execute(self: pgconn.Connection, sql: str, params: Sequence[Any] = ()) -> pgconn.Cursor:
        word = sql.strip().upper()
        if word in ("COMMIT", "ROLLBACK"):
            pipeline = self.__dict__.pop("_bench_pipeline", None)
            cur = original(self, sql, params)
            if pipeline is not None:
                pipeline[0].__exit__(None, None, None)
            return cur
        cur = original(self, sql, params)
        if word.startswith("BEGIN"):
            manager = self._conn.pipeline()
            self.__dict__["_bench_pipeline"] = (manager, manager.__enter__())
        elif "_bench_pipeline" in self.__dict__ and (word.startswith("SELECT") or "LOADED_PAGES" in word):
            self.__dict__["_bench_pipeline"][1].sync()  # the result is read now
        return cur

    return execute


def _binary_copy_executemany(original: Any) -> Any:
    """saver.pgconn's executemany with COPY's binary format (types from the staging table)."""

    def executemany(self: pgconn.Connection, sql: str, seq: Iterable[Sequence[Any]]) -> Any:
        bulk = pgconn._INSERT_OR_NOTHING.fullmatch(sql)
        if bulk is None or not self.in_transaction:
            return original(self, sql, seq)
        rows = [tuple(p) for p in seq]
        stage = self._stage(bulk[1], ", ".join(c.strip() for c in bulk[2].split(",")))
        types = self.__dict__.setdefault("_bench_types", {})
        if stage.name not in types:
            with self._conn.cursor() as cursor:
                cursor.execute(f"SELECT {stage.columns} FROM {stage.name} LIMIT 0")
                types[stage.name] = [c.type_code for c in cursor.description or ()]
        with (
            self._conn.cursor() as cursor,
            cursor.copy(f"COPY {stage.name} ({stage.columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(types[stage.name])
            for row in rows:
                copy.write_row(row)
        stage.pending += len(rows)
        return pgconn._StagedCursor(self, stage)

    return executemany


@contextmanager
def way(name: str) -> Iterator[None]:
    """The adapter as it inserts rows the ``name`` way, for the time of the block."""
    saved = pgconn.Connection.execute, pgconn.Connection.executemany
    if name in ("executemany", "pipeline"):
        pgconn.Connection.executemany = _executemany  # type: ignore[method-assign,assignment]
    if name == "pipeline":
        pgconn.Connection.execute = _pipelined_execute(saved[0])  # type: ignore[method-assign]
    if name == "copy-binary":
        pgconn.Connection.executemany = _binary_copy_executemany(saved[1])  # type: ignore[method-assign]
    try:
        yield
    finally:
        pgconn.Connection.execute, pgconn.Connection.executemany = saved  # type: ignore[method-assign]


def backend_cpu(pid: int) -> float:
    """The server backend's user+system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, run: list[dict[str, Any]], batch: int, name: str) -> tuple[float, float, int]:
    """Saver CPU s, backend CPU s and rows in processed_users of loading ``run`` the ``name`` way."""
    store = Store(parse_url(url))
    store.apply_event({"type": "run_started", "run_id": RUN_ID, "run_ts": RUN_TS, "trigger": "bench"})
    pid = store.conn.raw.info.backend_pid  # type: ignore[attr-defined]
    with way(name):
        c0, b0 = time.process_time(), backend_cpu(pid)
        for i in range(0, len(run), batch):
            store.load_pages(run[i : i + batch])
        cpu, server = time.process_time() - c0, backend_cpu(pid) - b0
    valid = store.conn.execute("SELECT count(*) FROM processed_users").fetchone()[0]
    store.close()
    return cpu, server, valid


def main() -> None:
    """Print saver and server CPU per user of each way, the median of the repeats."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    run, ways = pages(args.users, args.page_size), args.ways.split(",")
    server = tbpg.start_postgres()
    try:
        got: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        counts = set()
        for _ in range(args.repeat):
            for name in ways:  # back to back, each in a fresh database
                cpu, backend, valid = load(server.create_database(), run, args.batch, name)
                got[name].append((cpu, backend))
                counts.add(valid)
        print(
            f"{args.users:,} users ({sorted(counts)} valid rows), batches of {args.batch} pages of {args.page_size}, "
            f"median of {args.repeat}; libpq {psycopg.pq.version()}"
        )
        for name in ways:
            saver = statistics.median(c for c, _ in got[name]) * 1e6 / args.users
            backend = statistics.median(b for _, b in got[name]) * 1e6 / args.users
            print(f"  {name:12} saver {saver:6.1f} us/user   postgres backend {backend:6.1f} us/user")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
