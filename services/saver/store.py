"""The system of record: run headers from events, pages loaded idempotently, runs moved through their statuses."""

import sqlite3
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import orjson

from etl_common import runs
from etl_common.clock import stamp_iso, utc_iso
from etl_common.db import DatabaseUrl, connect_writer, parse_url
from etl_common.files import file_names
from etl_common.runs import IN_FLIGHT, Event, RunStatus, parse_event, sql_in
from saver import loader, runevents
from saver.files import RunFile
from saver.migrate import migrate
from saver.runreads import RunReads


def now_iso() -> str:
    """Now in the project's one timestamp format (etl_common.clock)."""
    return utc_iso()


def ts_iso(run_ts: str) -> str:
    """``20261125_204033`` -> ``2026-11-25T20:40:33.000Z``."""
    return stamp_iso(run_ts)


# How the watchdog's verdict of no progress starts (saver.watchdog): a page loaded after it brings the run back.
STALLED = "watchdog: no progress"
S = RunStatus
# The WAL's size at which SQLite copies it back into the database file (PRAGMA wal_autocheckpoint counts pages).
WAL_CHECKPOINT_BYTES = 40 << 20
# The first key of the advisory locks on finishing a run (the second is the run id's hash): this project's locks.
FINISH_LOCK = 0x45544C


class Store(RunReads):
    """Owns the writer connection; every write is one explicit transaction. SQL only: no files, no encryption."""

    # saver.userrows writes a page through a Store (rows only) or a saver.loader.Rows (rows and appended files).
    loading: None = None

    def __init__(self, target: str | DatabaseUrl) -> None:
        # A SQLite file's path, or the engine and address of ETL_DATABASE_URL (etl_common.db).
        self.database = target if isinstance(target, DatabaseUrl) else parse_url("", target)
        # On PostgreSQL, saver.pgconn's adapter: the sqlite3 interface the saver's SQL code uses, over psycopg.
        self.conn: sqlite3.Connection
        if self.database.engine == "postgresql":
            from saver.pgconn import Connection

            raw = connect_writer(self.database)
            migrate(raw)
            self.conn = cast(sqlite3.Connection, Connection(raw))  # type: ignore[arg-type]
            return
        self.conn = connect_writer(target if isinstance(target, str) else str(self.database.path))
        # Checkpoint the WAL every ~40 MB instead of every 4 MB: each checkpoint syncs the file, and at the
        # default they took a third of the load time (measured on batches of 10 pages of 100 users).
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page_size}")
        migrate(self.conn)

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.database.engine

    def close(self) -> None:
        """Close the writer connection."""
        self.conn.close()

    def connection_lost(self) -> bool:
        """PostgreSQL closed the writer's connection (a restart, a terminated session, a network cut)."""
        raw = getattr(self.conn, "raw", None)  # saver.pgconn's adapter; a SQLite file has no connection to lose
        return raw is not None and bool(raw.closed)

    def transaction(self) -> "_Transaction":
        """``with store.transaction():`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""
        return _Transaction(self.conn)

    def claim(self, run_id: str) -> bool:
        """Whether this saver may finish the run (files, upload, report, ``succeeded``): always on SQLite (one
        saver); on PostgreSQL the holder of the run's advisory lock, on this session so that a saver that dies
        releases it and another takes the run over, and only while the run still owes its finish."""
        if self.engine != "postgresql":
            return True
        if not self.conn.execute("SELECT pg_try_advisory_lock(?, hashtext(?))", (FINISH_LOCK, run_id)).fetchone()[0]:
            return False
        run = self.run(run_id)
        if run is not None and run["status"] in (S.LOADED, S.UPLOAD_PENDING):
            return True
        self.unclaim(run_id)  # another saver finished it between our read and the lock
        return False

    def unclaim(self, run_id: str) -> None:
        """Release the run's finishing lock (PostgreSQL)."""
        if self.engine == "postgresql":
            self.conn.execute("SELECT pg_advisory_unlock(?, hashtext(?))", (FINISH_LOCK, run_id))

    def _ensure_run(self, run_id: str, run_ts: str) -> None:
        names = file_names(run_ts)
        # Called for every page and event: inserting only when absent keeps PostgreSQL's identity from burning a
        # value on each conflict, so run ids count 1, 2, 3 on both engines.
        self.conn.execute(
            "INSERT INTO etl_runs (run_id, run_timestamp, raw_file, processed_file, dlq_file, started_at, updated_at) "
            "SELECT ?,?,?,?,?,?,? WHERE NOT EXISTS (SELECT 1 FROM etl_runs WHERE run_id=?) ON CONFLICT DO NOTHING",
            (
                run_id,
                ts_iso(run_ts),
                names["raw_file"],
                names["processed_file"],
                names["dlq_file"],
                ts_iso(run_ts),
                now_iso(),
                run_id,
            ),
        )

    def apply_event(self, event: dict[str, Any] | Event) -> None:
        """Move a run's header as its lifecycle events arrive (any order, any number of times; saver.runevents)."""
        parsed = event if isinstance(event, Event) else parse_event(event)
        with self.transaction():
            if parsed is not None:
                runevents.apply(self, parsed, now_iso())

    def _add_warning(self, run_id: str, warning: str) -> bool:
        """Append ``warning`` to the run's warnings unless it is there (events may come twice); True when added."""
        return runevents.add_warning(self.conn, run_id, warning, now_iso())

    def add_warnings(self, run_id: str, warnings: list[str]) -> list[str]:
        """Append each warning once, in one transaction; returns those newly added."""
        with self.transaction():
            return [w for w in warnings if self._add_warning(run_id, w)]

    def load_pages(self, pages: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
        """Load pages' rows in one transaction, no other participant (saver.loader composes files and stream)."""
        return loader.load_pages(self, pages)

    def complete_runs(self) -> list[str]:
        """Runs whose pages are all loaded move to 'loaded'; returns the runs now owing files or uploads."""
        with self.transaction():
            self.conn.execute(
                f"UPDATE etl_runs SET status='{S.LOADED}', updated_at=? "
                f"WHERE status IN {sql_in({S.EXTRACTED, S.TRANSFORMED})} "
                "AND pages_expected IS NOT NULL "
                "AND (SELECT count(*) FROM loaded_pages lp WHERE lp.run_id = etl_runs.run_id) >= pages_expected",
                (now_iso(),),
            )
        return [r[0] for r in self.conn.execute(f"SELECT run_id FROM etl_runs WHERE status='{S.LOADED}' ORDER BY id")]

    def runs_owing_upload(self) -> list[str]:
        """Runs in ``upload_pending`` (files written, upload failed), oldest first: retried after a restart."""
        return [
            r[0]
            for r in self.conn.execute(f"SELECT run_id FROM etl_runs WHERE status='{S.UPLOAD_PENDING}' ORDER BY id")
        ]

    def save_quality(self, run_id: str, report: dict[str, Any]) -> None:
        """Store (or replace) the run's data-quality report as JSON."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO run_quality (run_id, report, computed_at) VALUES (?,?,?) ON CONFLICT (run_id) "
                "DO UPDATE SET report=excluded.report, computed_at=excluded.computed_at",
                (run_id, orjson.dumps(report).decode(), now_iso()),
            )

    def record_file(self, run_id: str, kind: str, info: RunFile) -> None:
        """Record a written file (``raw``, ``processed`` or ``dlq``); a rewrite replaces it and clears its upload."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO uploaded_files (run_id, kind, name, bytes, sha256, records, encrypted, written_at) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (run_id, kind) DO UPDATE SET name=excluded.name, "
                "bytes=excluded.bytes, sha256=excluded.sha256, records=excluded.records, "
                "encrypted=excluded.encrypted, written_at=excluded.written_at, remote_path=NULL, uploaded_at=NULL",
                (
                    run_id,
                    kind,
                    info["name"],
                    info["bytes"],
                    info["sha256"],
                    info["records"],
                    int(info["encrypted"]),
                    now_iso(),
                ),
            )

    def mark_uploaded(self, run_id: str, remote: dict[str, str]) -> None:
        """Record each kind's remote path ({} when SFTP is off) and mark the run ``succeeded``, in one transaction."""
        at = now_iso()
        with self.transaction():
            for kind, path in remote.items():
                self.conn.execute(
                    "UPDATE uploaded_files SET remote_path=?, uploaded_at=? WHERE run_id=? AND kind=?",
                    (path, at, run_id, kind),
                )
            self._finish(run_id, S.SUCCEEDED, None)

    def fail_unless_progressed(self, run_id: str, status: str, updated_at: str, error: str) -> bool:
        """Fail the run if it is still as the watchdog saw it (same status, no progress since); True when it did."""
        with self.transaction():
            cur = self.conn.execute(
                f"UPDATE etl_runs SET status='{S.FAILED}', error=?, updated_at=? "
                "WHERE run_id=? AND status=? AND updated_at=?",
                (error[:2000], now_iso(), run_id, status, updated_at),
            )
        return cur.rowcount == 1

    def note_in_flight(self, error: str) -> None:
        """Show ``error`` on every run in flight (a saver-wide condition, e.g. a full volume, holds them all)."""
        with self.transaction():
            self.conn.execute(f"UPDATE etl_runs SET error=? WHERE status IN {sql_in(IN_FLIGHT)}", (error,))

    def clear_in_flight(self, prefix: str) -> None:
        """Clear the error shown by ``note_in_flight`` (the one starting with ``prefix``) once the condition ended."""
        with self.transaction():
            self.conn.execute(
                f"UPDATE etl_runs SET error=NULL WHERE substr(error, 1, ?)=? AND status IN {sql_in(IN_FLIGHT)}",
                (len(prefix), prefix),
            )

    def fail(self, run_id: str, error: str) -> None:
        """The run can never complete (a page of it is poison): failed with ``error``, unless it already succeeded."""
        self.apply_event(runs.run_failed(run_id, error))

    def mark(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """Set the run's status and error (None clears it); ``succeeded`` also sets ``finished_at``."""
        with self.transaction():
            self._finish(run_id, status, error)

    def _finish(self, run_id: str, status: RunStatus, error: str | None) -> None:
        finished = now_iso() if status == S.SUCCEEDED else None
        # Never before the start, even when the extractor's clock runs ahead of this host's (one format: text order).
        self.conn.execute(
            "UPDATE etl_runs SET status=?, error=?, updated_at=?, finished_at=COALESCE("
            "CASE WHEN started_at > ? THEN started_at ELSE ? END, finished_at) WHERE run_id=?",
            (status, error, now_iso(), finished, finished, run_id),
        )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not exc_type:
                self.conn.execute("COMMIT")
                return
        except sqlite3.Error:
            # A COMMIT that failed (a full disk) may leave the transaction open: end it, or no later one can begin.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): a second ROLLBACK would hide the error.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
