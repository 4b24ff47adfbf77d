"""The system of record: run headers from events, pages loaded idempotently, runs moved through their statuses."""

import sqlite3
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import orjson

from etl_common.clock import stamp_iso, utc_iso
from etl_common.db import connect_writer
from etl_common.files import file_names
from saver.files import LoadingFiles, RunFile
from saver.migrate import migrate
from saver.userrows import load_page


def now_iso() -> str:
    """Now in the project's one timestamp format (etl_common.clock)."""
    return utc_iso()


def ts_iso(run_ts: str) -> str:
    """``20261125_204033`` -> ``2026-11-25T20:40:33.000Z``."""
    return stamp_iso(run_ts)


# How the watchdog's verdict of no progress starts (saver.watchdog): a page loaded after it brings the run back.
STALLED = "watchdog: no progress"


class Store:
    """Owns the writer connection; every write is one explicit transaction."""

    def __init__(self, path: str, loading_dir: str | None = None) -> None:
        """``loading_dir``: append each run's three plaintext files there as its pages commit (``LoadingFiles``)."""
        self.conn = connect_writer(path)
        self.loading = LoadingFiles(loading_dir) if loading_dir is not None else None
        # Checkpoint the WAL every ~40 MB instead of every 4 MB: each checkpoint syncs the file, and at the
        # default they took a third of the load time (measured on batches of 10 pages of 100 users).
        self.conn.execute("PRAGMA wal_autocheckpoint=10000")
        migrate(self.conn)

    def close(self) -> None:
        """Close the writer connection."""
        self.conn.close()

    def _tx(self) -> "_Transaction":
        return _Transaction(self.conn)

    def _ensure_run(self, run_id: str, run_ts: str) -> None:
        names = file_names(run_ts)
        self.conn.execute(
            "INSERT OR IGNORE INTO etl_runs (run_id, run_timestamp, raw_file, processed_file, dlq_file, "
            "started_at, updated_at) VALUES (?,?,?,?,?,?,?)",
            (
                run_id,
                ts_iso(run_ts),
                names["raw_file"],
                names["processed_file"],
                names["dlq_file"],
                ts_iso(run_ts),
                now_iso(),
            ),
        )

    def apply_event(self, event: dict[str, Any]) -> None:
        """Move a run's header as its lifecycle events arrive (any order, any number of times)."""
        kind, run_id = event.get("type"), str(event.get("run_id", ""))
        with self._tx():
            if kind == "run_started":
                self._ensure_run(run_id, event["run_ts"])
                self.conn.execute(
                    "UPDATE etl_runs SET trigger=?, started_at=?, updated_at=? WHERE run_id=?",
                    (event.get("trigger"), event.get("started_at"), now_iso(), run_id),
                )
            elif kind == "phase1_complete":
                self._ensure_run(run_id, event["run_ts"])
                self.conn.execute(
                    "UPDATE etl_runs SET pages_expected=?, total_expected=?, error=NULL, updated_at=?, "
                    "status=CASE WHEN status IN ('running','failed') THEN 'extracted' ELSE status END WHERE run_id=?",
                    (int(event["pages"]), int(event.get("total", event["records"])), now_iso(), run_id),
                )
            elif kind == "phase2_complete":
                self.conn.execute(
                    "UPDATE etl_runs SET updated_at=?, status=CASE WHEN status IN ('running','extracted') "
                    "THEN 'transformed' ELSE status END WHERE run_id=?",
                    (now_iso(), run_id),
                )
            elif kind == "extract_failed":
                self.conn.execute(
                    "UPDATE etl_runs SET status='failed', error=?, updated_at=? WHERE run_id=? AND status='running'",
                    (str(event.get("error", ""))[:2000], now_iso(), run_id),
                )
            elif kind == "run_warning":
                self._ensure_run(run_id, event["run_ts"])
                self._add_warning(run_id, str(event["warning"]))
            elif kind == "run_failed":
                # A stage gave up on part of the run (an entry dead-lettered): it can never complete.
                self.conn.execute(
                    "UPDATE etl_runs SET status='failed', error=?, updated_at=? WHERE run_id=? AND status<>'succeeded'",
                    (str(event.get("error", ""))[:2000], now_iso(), run_id),
                )
            elif kind == "run_error":
                # An unexpected error the stage will retry: shown on the run, whose status stays as it is.
                self.conn.execute(
                    "UPDATE etl_runs SET error=?, updated_at=? WHERE run_id=? AND status NOT IN ('succeeded','failed')",
                    (str(event.get("error", ""))[:2000], now_iso(), run_id),
                )
            elif kind == "run_replayed":
                # Its dead-lettered pages went back onto their stream (etl_common.deadletters): it may complete now.
                self.conn.execute(
                    "UPDATE etl_runs SET status='extracted', error=NULL, updated_at=? WHERE run_id=? "
                    "AND status='failed' AND pages_expected IS NOT NULL",
                    (now_iso(), run_id),
                )
            elif kind == "run_resumed":
                self.conn.execute(
                    "UPDATE etl_runs SET status='running', error=NULL, updated_at=? WHERE run_id=? AND status='failed'",
                    (now_iso(), run_id),
                )

    def _add_warning(self, run_id: str, warning: str) -> bool:
        """Append ``warning`` to the run's warnings unless it is there (events may come twice); True when added."""
        text = warning[:2000]
        cur = self.conn.execute(
            "UPDATE etl_runs SET warnings=json_insert(COALESCE(warnings, '[]'), '$[#]', ?), updated_at=? "
            "WHERE run_id=? AND NOT EXISTS (SELECT 1 FROM json_each(COALESCE(warnings, '[]')) WHERE value=?)",
            (text, now_iso(), run_id, text),
        )
        return cur.rowcount == 1

    def add_warnings(self, run_id: str, warnings: list[str]) -> list[str]:
        """Append each warning once, in one transaction; returns those newly added."""
        with self._tx():
            return [w for w in warnings if self._add_warning(run_id, w)]

    def invariant_violations(self, run_id: str) -> list[tuple[str, str]]:
        """What the loaded run's rows contradict, as (check, warning): the same user id on several raw rows, and a
        table whose rows differ from what the run's pages announced (the ledger)."""
        found = []
        dup = self.conn.execute(
            "SELECT count(*), sum(n), group_concat(user_id) FROM (SELECT user_id, count(*) AS n FROM raw_users "
            "WHERE run_id=? AND user_id IS NOT NULL GROUP BY user_id HAVING n > 1 ORDER BY user_id)",
            (run_id,),
        ).fetchone()
        if dup[0]:
            sample = ", ".join(str(dup[2]).split(",")[:10]) + (", ..." if dup[0] > 10 else "")
            found.append(
                (
                    "duplicate_user_ids",
                    f"duplicate user ids: {dup[0]} ids appear on {dup[1]} raw rows of the run (e.g. {sample}); the "
                    "source may ignore skip, overlap its pages or repeat users: this run's data may be wrong, "
                    "compare it with the source before using it",
                )
            )
        announced = self.conn.execute(
            "SELECT coalesce(sum(raw_count),0), coalesce(sum(valid_count),0), coalesce(sum(invalid_count),0) "
            "FROM loaded_pages WHERE run_id=?",
            (run_id,),
        ).fetchone()
        differ = []
        for table, expected in zip(("raw_users", "processed_users", "invalid_users"), announced, strict=True):
            rows = self.conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]
            if rows != expected:
                differ.append(f"{table} has {rows} rows, its pages announced {expected}")
        if differ:
            found.append(
                (
                    "table_counts",
                    f"table counts differ from the pages loaded: {'; '.join(differ)} (records sharing a page "
                    "position were dropped); this run's data is incomplete: look at the transformer's output",
                )
            )
        return found

    def load_pages(self, pages: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
        """Load pages in one transaction; a page already in the ledger adds nothing. Returns the new ones."""
        loaded = []
        # In page order, so that the files appended while loading (LoadingFiles) keep the tables' order.
        ordered = sorted(pages, key=lambda p: (str(p["run_id"]), int(p["page"])))
        try:
            with self._tx():
                for page in ordered:
                    if load_page(self, page):
                        loaded.append((str(page["run_id"]), int(page["page"])))
        except BaseException:
            if self.loading:
                self.loading.committed(False)
            raise
        if self.loading:
            self.loading.committed(True)
        return loaded

    def complete_runs(self) -> list[str]:
        """Runs whose pages are all loaded move to 'loaded'; returns the runs now owing files or uploads."""
        with self._tx():
            self.conn.execute(
                "UPDATE etl_runs SET status='loaded', updated_at=? WHERE status IN ('extracted','transformed') "
                "AND pages_expected IS NOT NULL "
                "AND (SELECT count(*) FROM loaded_pages lp WHERE lp.run_id = etl_runs.run_id) >= pages_expected",
                (now_iso(),),
            )
        return [r[0] for r in self.conn.execute("SELECT run_id FROM etl_runs WHERE status='loaded' ORDER BY id")]

    def runs_owing_upload(self) -> list[str]:
        """Runs in ``upload_pending`` (files written, upload failed), oldest first: retried after a restart."""
        return [
            r[0] for r in self.conn.execute("SELECT run_id FROM etl_runs WHERE status='upload_pending' ORDER BY id")
        ]

    def run(self, run_id: str) -> sqlite3.Row | None:
        """The run's ``etl_runs`` row; None when the run is unknown."""
        row: sqlite3.Row | None = self.conn.execute("SELECT * FROM etl_runs WHERE run_id=?", (run_id,)).fetchone()
        return row

    def has_quality(self, run_id: str) -> bool:
        """Whether the run's data-quality report is stored."""
        return self.conn.execute("SELECT 1 FROM run_quality WHERE run_id=?", (run_id,)).fetchone() is not None

    def save_quality(self, run_id: str, report: dict[str, Any]) -> None:
        """Store (or replace) the run's data-quality report as JSON."""
        with self._tx():
            self.conn.execute(
                "INSERT INTO run_quality (run_id, report, computed_at) VALUES (?,?,?) ON CONFLICT (run_id) "
                "DO UPDATE SET report=excluded.report, computed_at=excluded.computed_at",
                (run_id, orjson.dumps(report).decode(), now_iso()),
            )

    def latest_run_without_quality(self) -> str | None:
        """The newest run, when its pages are all loaded and it has no quality report."""
        row = self.conn.execute(
            "SELECT run_id FROM etl_runs r WHERE status IN ('loaded','upload_pending','succeeded') "
            "AND NOT EXISTS (SELECT 1 FROM run_quality q WHERE q.run_id = r.run_id) "
            "AND id = (SELECT max(id) FROM etl_runs)"
        ).fetchone()
        return row[0] if row else None

    def latest_invalid_ratio(self) -> float | None:
        """The invalid share of the newest run that has a quality report (for the gauge after a restart)."""
        row = self.conn.execute(
            "SELECT r.invalid_count, r.raw_count FROM run_quality q JOIN etl_runs r USING (run_id) "
            "ORDER BY r.id DESC LIMIT 1"
        ).fetchone()
        return (row[0] / row[1] if row[1] else 0.0) if row else None

    def record_file(self, run_id: str, kind: str, info: RunFile) -> None:
        """Record a written file (``raw``, ``processed`` or ``dlq``); a rewrite replaces it and clears its upload."""
        with self._tx():
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

    def files(self, run_id: str) -> list[sqlite3.Row]:
        """The run's ``uploaded_files`` rows, by kind."""
        return self.conn.execute("SELECT * FROM uploaded_files WHERE run_id=? ORDER BY kind", (run_id,)).fetchall()

    def mark_uploaded(self, run_id: str, remote: dict[str, str]) -> None:
        """Record each kind's remote path ({} when SFTP is off) and mark the run ``succeeded``, in one transaction."""
        at = now_iso()
        with self._tx():
            for kind, path in remote.items():
                self.conn.execute(
                    "UPDATE uploaded_files SET remote_path=?, uploaded_at=? WHERE run_id=? AND kind=?",
                    (path, at, run_id, kind),
                )
            self._finish(run_id, "succeeded", None)

    def in_flight(self) -> list[sqlite3.Row]:
        """Runs not yet final (with their loaded page count), for the watchdog."""
        return self.conn.execute(
            "SELECT r.run_id, r.status, r.updated_at, r.pages_expected, "
            "(SELECT count(*) FROM loaded_pages lp WHERE lp.run_id = r.run_id) AS loaded_pages FROM etl_runs r "
            "WHERE r.status IN ('running','extracted','transformed','loaded') AND r.updated_at IS NOT NULL "
            "ORDER BY r.id"
        ).fetchall()

    def missing_pages(self, run_id: str, expected: int) -> list[int]:
        """The pages 0..expected-1 of the run not in the ledger."""
        loaded = {r[0] for r in self.conn.execute("SELECT page FROM loaded_pages WHERE run_id=?", (run_id,))}
        return [p for p in range(expected) if p not in loaded]

    def fail_unless_progressed(self, run_id: str, status: str, updated_at: str, error: str) -> bool:
        """Fail the run if it is still as the watchdog saw it (same status, no progress since); True when it did."""
        with self._tx():
            cur = self.conn.execute(
                "UPDATE etl_runs SET status='failed', error=?, updated_at=? "
                "WHERE run_id=? AND status=? AND updated_at=?",
                (error[:2000], now_iso(), run_id, status, updated_at),
            )
        return cur.rowcount == 1

    def note_in_flight(self, error: str) -> None:
        """Show ``error`` on every run in flight (a saver-wide condition, e.g. a full volume, holds them all)."""
        with self._tx():
            self.conn.execute(
                "UPDATE etl_runs SET error=? WHERE status IN ('running','extracted','transformed','loaded')", (error,)
            )

    def clear_in_flight(self, prefix: str) -> None:
        """Clear the error shown by ``note_in_flight`` (the one starting with ``prefix``) once the condition ended."""
        with self._tx():
            self.conn.execute(
                "UPDATE etl_runs SET error=NULL WHERE substr(error, 1, ?)=? "
                "AND status IN ('running','extracted','transformed','loaded')",
                (len(prefix), prefix),
            )

    def fail(self, run_id: str, error: str) -> None:
        """The run can never complete (a page of it is poison): failed with ``error``, unless it already succeeded."""
        self.apply_event({"type": "run_failed", "run_id": run_id, "error": error})

    def mark(self, run_id: str, status: str, error: str | None = None) -> None:
        """Set the run's status and error (None clears it); ``succeeded`` also sets ``finished_at``."""
        with self._tx():
            self._finish(run_id, status, error)

    def _finish(self, run_id: str, status: str, error: str | None) -> None:
        finished = now_iso() if status == "succeeded" else None
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
