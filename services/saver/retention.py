"""Retention: old runs' rows, local files, uploaded files and dead letters removed as the settings say, and reported.

Each kind of data has two bounds (``ETL_RETENTION_<KIND>_DAYS`` and ``_RUNS``, 0 = no bound): a run older than the
days, or not among the newest runs, loses that kind. Runs not final (in progress, loaded, upload_pending) and the
latest succeeded run are never touched. The headers bound removes everything of a run, header and quality report
included. Applied after each succeeded run and on demand (a ``retention_requested`` event, e.g. from the API);
each application, or plan (dry run), is logged, counted and stored in ``retention_log`` for the API.
"""

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import paramiko
import redis
import structlog

from etl_common import deadletters, metrics
from etl_common.clock import utc_iso
from etl_common.keys import Keys
from etl_common.runs import EventType
from saver import crypto, sftp
from saver.retention_policy import Policy, plan
from saver.settings import SaverSettings

log = structlog.get_logger(__name__)

ROW_TABLES = ("raw_users", "processed_users", "invalid_users")
# Deleted in this order: a processed row reads its record from its raw row (migration 0008), so it goes first.
_DELETE_ORDER = ("processed_users", "invalid_users", "raw_users")
CHUNK_ROWS = 5000  # rows deleted per transaction: the writer lock is held for milliseconds at a time


class Retention:
    """Applies the saver's retention policy with its writer connection, Redis client and SFTP settings."""

    def __init__(
        self,
        settings: SaverSettings,
        conn: sqlite3.Connection,
        client: redis.Redis,
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings, self.conn, self.client, self.beat = settings, conn, client, beat
        self.keys = Keys(settings.key_prefix)
        self.policy = Policy.of(settings)

    def after_success(self) -> None:
        """Apply the policy after a run succeeded (``ETL_RETENTION_AFTER_RUN``), when any bound is set."""
        if self.settings.retention_after_run and self.policy.active():
            self.run(trigger="after_run")

    def on_event(self, event: dict[str, Any]) -> None:
        """Apply (or plan, with ``dry_run``) on a ``retention_requested`` event; other events are not ours."""
        if event.get("type") == EventType.RETENTION_REQUESTED:
            self.run(
                trigger=str(event.get("trigger") or "request"),
                request_id=str(event.get("request_id") or ""),
                dry_run=bool(event.get("dry_run", True)),
            )

    def run(self, trigger: str, request_id: str = "", dry_run: bool = False) -> dict[str, Any] | None:
        """Plan or apply now; the report, stored and logged. Never raises: retention must not stop the saver."""
        try:
            return self._run(trigger, request_id, dry_run)
        except Exception:
            log.exception("retention failed", trigger=trigger, request_id=request_id)
            metrics.ERRORS.labels(stage="retention").inc()
            return None

    def _run(self, trigger: str, request_id: str, dry_run: bool) -> dict[str, Any]:
        started = utc_iso()
        now = datetime.now(timezone.utc)
        chosen = plan(self.conn, self.policy, now)
        removed: dict[str, Any] = {"rows": {}, "files": 0, "remote": 0, "dead_letters": 0, "headers": 0}
        freed = {"database": 0, "files": 0, "remote": 0, "dead_letters": 0}
        errors: list[str] = []
        runs = chosen["runs"]
        if dry_run:
            removed, freed = self._measure(runs, chosen["protected"], now)
        else:
            removed["rows"], freed["database"] = self._rows(runs["rows"])
            removed["files"], freed["files"] = self._files(runs["files"])
            removed["remote"], freed["remote"], err = self._remote(runs["remote"])
            errors += err
            removed["dead_letters"], freed["dead_letters"] = self._dead_letters(
                runs["dead_letters"], chosen["protected"], now, apply=True
            )
            # A header goes only when nothing of its run is left to remove (the SFTP server may have been down).
            removed["headers"] = self._headers(runs["headers"] if not err else [])
            vacuum = self._vacuum()
            freed["database_returned"] = vacuum["returned"]
        report: dict[str, Any] = {
            "request_id": request_id,
            "trigger": trigger,
            "dry_run": dry_run,
            "started_at": started,
            "finished_at": utc_iso(),
            "policy": self.policy.as_dict(),
            "runs": runs,
            "protected": chosen["protected"],
            "removed": removed,
            "bytes_freed": freed,
            "errors": errors,
        }
        if not dry_run:
            report["vacuum"] = vacuum["mode"]
            self._count(removed, freed)
        self.conn.execute(
            "INSERT INTO retention_log (request_id, trigger, dry_run, started_at, finished_at, report) "
            "VALUES (?,?,?,?,?,?)",
            (request_id or None, trigger, int(dry_run), started, report["finished_at"], orjson.dumps(report).decode()),
        )
        fields = {k: report[k] for k in ("trigger", "request_id", "removed", "bytes_freed", "errors")}
        log.info("retention planned" if dry_run else "retention applied", **fields)
        return report

    # --- what a plan would remove, measured without removing it -----------------------------------------------

    def _measure(
        self, runs: dict[str, list[str]], protected: list[str], now: datetime
    ) -> tuple[dict[str, Any], dict[str, int]]:
        rows: dict[str, int] = {}
        for table in ROW_TABLES:
            rows[table] = sum(
                self.conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (r,)).fetchone()[0]
                for r in runs["rows"]
            )
        local = [p for r in runs["files"] for p in self._local_paths(r) if p.exists()]
        remote = [f for r in runs["remote"] for f in self._remote_files(r)]
        dead, dead_bytes = self._dead_letters(runs["dead_letters"], protected, now, apply=False)
        removed = {
            "rows": rows,
            "files": len(local),
            "remote": len(remote),
            "dead_letters": dead,
            "headers": len(runs["headers"]),
        }
        freed = {
            "database": 0,  # known once removed (pages freed)
            "files": sum(p.stat().st_size for p in local),
            "remote": sum(int(f["bytes"]) for f in remote),
            "dead_letters": dead_bytes,
        }
        return removed, freed

    # --- rows ---------------------------------------------------------------------------------------------------

    def _rows(self, run_ids: list[str]) -> tuple[dict[str, int], int]:
        """Delete the runs' rows in short transactions; (rows per table, bytes of the pages they freed)."""
        counts = dict.fromkeys(ROW_TABLES, 0)
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0] if self._sqlite else 0
        before = self._used_pages()
        for run_id in run_ids:
            for table in _DELETE_ORDER:
                while True:
                    self.conn.execute("BEGIN IMMEDIATE")
                    try:
                        cur = self.conn.execute(
                            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE run_id=? LIMIT ?)",
                            (run_id, CHUNK_ROWS),
                        )
                        self.conn.execute("COMMIT")
                    except BaseException:
                        self.conn.execute("ROLLBACK")
                        raise
                    counts[table] += cur.rowcount
                    self.beat()
                    if cur.rowcount < CHUNK_ROWS:
                        break
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM loading_files WHERE run_id=?", (run_id,))
            self.conn.execute(
                "UPDATE etl_runs SET rows_removed_at=COALESCE(rows_removed_at, ?) WHERE run_id=?", (utc_iso(), run_id)
            )
            self.conn.execute("COMMIT")
        return counts, max(0, before - self._used_pages()) * page_size

    @property
    def _sqlite(self) -> bool:
        # PostgreSQL has no page counts to read here and vacuums by itself (autovacuum): those steps are SQLite's.
        return isinstance(self.conn, sqlite3.Connection)

    def _used_pages(self) -> int:
        if not self._sqlite:
            return 0
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free)

    def _vacuum(self) -> dict[str, Any]:
        """Return free pages to the file system in small steps (auto_vacuum=INCREMENTAL); else they are reused."""
        if not self._sqlite:
            return {"mode": "postgresql: autovacuum makes freed space reusable; not measured here", "returned": 0}
        mode = self.conn.execute("PRAGMA auto_vacuum").fetchone()[0]
        if mode != 2:
            reused = "none: freed pages are reused by later runs; python -m saver vacuum returns them"
            return {"mode": reused, "returned": 0}
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        before = self.conn.execute("PRAGMA page_count").fetchone()[0]
        while self.conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            # Each step is its own short write transaction; WAL readers are never blocked by it. executescript steps
            # the pragma to its end: execute() steps it once, which frees a single page.
            self.conn.executescript(f"PRAGMA incremental_vacuum({int(self.settings.retention_vacuum_pages)});")
            self.beat()
        after = self.conn.execute("PRAGMA page_count").fetchone()[0]
        return {"mode": "incremental", "returned": (before - after) * page_size}

    # --- local and remote files ---------------------------------------------------------------------------------

    def _local_paths(self, run_id: str) -> Iterator[Path]:
        """The run's files in the data directory: plain, encrypted and still loading."""
        row = self.conn.execute(
            "SELECT raw_file, processed_file, dlq_file FROM etl_runs WHERE run_id=?", (run_id,)
        ).fetchone()
        base = Path(self.settings.data_dir)
        for name in row or ():
            if name:
                yield from (base / name, base / (name + crypto.SUFFIX), base / f"{name}.{run_id}.loading")

    def _files(self, run_ids: list[str]) -> tuple[int, int]:
        count = size = 0
        for run_id in run_ids:
            for path in self._local_paths(run_id):
                try:
                    n = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                count, size = count + 1, size + n
            self.conn.execute(
                "UPDATE uploaded_files SET local_removed_at=COALESCE(local_removed_at, ?) WHERE run_id=?",
                (utc_iso(), run_id),
            )
            self.beat()
        return count, size

    def _remote_files(self, run_id: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT kind, remote_path, bytes FROM uploaded_files WHERE run_id=? AND remote_path IS NOT NULL "
            "AND remote_removed_at IS NULL",
            (run_id,),
        ).fetchall()

    def _remote(self, run_ids: list[str]) -> tuple[int, int, list[str]]:
        files = [(r, f) for r in run_ids for f in self._remote_files(r)]
        if not files or not self.settings.sftp_enabled:
            return 0, 0, []
        count = size = 0
        try:
            client = sftp.connect(self.settings)
        except sftp.UploadFailed as exc:
            return 0, 0, [f"remote files kept for now: {exc}"]
        try:
            session = client.open_sftp()
            for run_id, f in files:
                try:
                    n = session.stat(f["remote_path"]).st_size or 0
                    session.remove(f["remote_path"])
                    count, size = count + 1, size + n
                except FileNotFoundError:
                    pass  # removed by someone else: recorded as removed
                self.conn.execute(
                    "UPDATE uploaded_files SET remote_removed_at=? WHERE run_id=? AND kind=?",
                    (utc_iso(), run_id, f["kind"]),
                )
                self.beat()
        except (OSError, paramiko.SSHException) as exc:
            return count, size, [f"remote files partly kept for now: {exc}"]
        finally:
            client.close()
        return count, size, []

    # --- dead letters and headers -------------------------------------------------------------------------------

    def _dead_letters(self, run_ids: list[str], protected: list[str], now: datetime, apply: bool) -> tuple[int, int]:
        """Dead letters of the runs given, and those of no known run older than the days bound; (count, bytes)."""
        bound = self.policy.bounds["dead_letters"]
        cutoff = now - timedelta(days=bound.days) if bound.days else None
        known = {r[0] for r in self.conn.execute("SELECT run_id FROM etl_runs")}
        doomed, size = [], 0
        for entry_id, fields in deadletters.scan(self.client, self.keys):
            run_id = deadletters.describe(entry_id, fields)["run_id"]
            if run_id in protected:
                continue
            orphan_old = run_id not in known and cutoff is not None and _entry_time(entry_id) < cutoff
            if run_id in run_ids or orphan_old:
                doomed.append(entry_id)
                size += sum(len(k) + len(v) for k, v in fields.items())
        if apply and doomed:
            deadletters.act(self.client, self.keys, "expire", doomed, actor="retention")
        return len(doomed), size

    def _headers(self, run_ids: list[str]) -> int:
        """Remove what is left of the runs: quality report, page ledger, file records and header."""
        for run_id in run_ids:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for table in ("run_quality", "loaded_pages", "loading_files", "uploaded_files", "etl_runs"):
                    self.conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return len(run_ids)

    @staticmethod
    def _count(removed: dict[str, Any], freed: dict[str, int]) -> None:
        metrics.RETENTION_REMOVED.labels(kind="rows").inc(sum(removed["rows"].values()))
        for kind in ("files", "remote", "dead_letters", "headers"):
            metrics.RETENTION_REMOVED.labels(kind=kind).inc(removed[kind])
        for kind in ("database", "files", "remote", "dead_letters"):
            metrics.RETENTION_FREED.labels(kind=kind).inc(freed[kind])


def _entry_time(entry_id: str) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, timezone.utc)


def make_incremental(conn: sqlite3.Connection) -> str:
    """Switch an existing database to ``auto_vacuum=INCREMENTAL``: one full VACUUM (it rewrites the file, and
    blocks the writer for its duration; WAL readers go on). New databases get the mode before their first table."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return "already incremental"
    t0 = time.monotonic()
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    return f"auto_vacuum is now incremental (VACUUM took {time.monotonic() - t0:.1f} s)"
