"""What the saver reads about runs: their rows, files, progress, quality and invariants (SQL only)."""

import sqlite3

from etl_common.runs import IN_FLIGHT, RunStatus, sql_in

S = RunStatus


class RunReads:
    """The reads of ``saver.store.Store`` (a mixin: the store holds the connection)."""

    conn: sqlite3.Connection

    def invariant_violations(self, run_id: str) -> list[tuple[str, str]]:
        """What the loaded run's rows contradict, as (check, warning): the same user id on several raw rows, and a
        table whose rows differ from what the run's pages announced (the ledger)."""
        found = []
        repeated = "FROM raw_users WHERE run_id=? AND user_id IS NOT NULL GROUP BY user_id HAVING count(*) > 1"
        # Whether any id repeats, first: one distinct count (0.11 s of CPU at 100,000 users against 0.25 s for the
        # grouping, measured), which runs after the run's last page; the grouping only when it does.
        any_repeated = self.conn.execute(
            "SELECT count(user_id) - count(DISTINCT user_id) FROM raw_users WHERE run_id=?", (run_id,)
        ).fetchone()[0]
        dup = (0, 0)
        if any_repeated:
            dup = self.conn.execute(
                f"SELECT count(*), sum(n) FROM (SELECT user_id, count(*) AS n {repeated}) AS dup", (run_id,)
            ).fetchone()
        if dup[0]:
            first = self.conn.execute(f"SELECT user_id {repeated} ORDER BY user_id LIMIT 10", (run_id,)).fetchall()
            sample = ", ".join(str(r[0]) for r in first) + (", ..." if dup[0] > 10 else "")
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

    def run(self, run_id: str) -> sqlite3.Row | None:
        """The run's ``etl_runs`` row; None when the run is unknown."""
        row: sqlite3.Row | None = self.conn.execute("SELECT * FROM etl_runs WHERE run_id=?", (run_id,)).fetchone()
        return row

    def has_quality(self, run_id: str) -> bool:
        """Whether the run's data-quality report is stored."""
        return self.conn.execute("SELECT 1 FROM run_quality WHERE run_id=?", (run_id,)).fetchone() is not None

    def latest_run_without_quality(self) -> str | None:
        """The newest run, when its pages are all loaded and it has no quality report."""
        row = self.conn.execute(
            f"SELECT run_id FROM etl_runs r WHERE status IN {sql_in({S.LOADED, S.UPLOAD_PENDING, S.SUCCEEDED})} "
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

    def files(self, run_id: str) -> list[sqlite3.Row]:
        """The run's ``uploaded_files`` rows, by kind."""
        return self.conn.execute("SELECT * FROM uploaded_files WHERE run_id=? ORDER BY kind", (run_id,)).fetchall()

    def in_flight(self) -> list[sqlite3.Row]:
        """Runs not yet final (with their loaded page count), for the watchdog."""
        return self.conn.execute(
            "SELECT r.run_id, r.status, r.updated_at, r.pages_expected, "
            "(SELECT count(*) FROM loaded_pages lp WHERE lp.run_id = r.run_id) AS loaded_pages FROM etl_runs r "
            f"WHERE r.status IN {sql_in(IN_FLIGHT)} AND r.updated_at IS NOT NULL "
            "ORDER BY r.id"
        ).fetchall()

    def missing_pages(self, run_id: str, expected: int) -> list[int]:
        """The pages 0..expected-1 of the run not in the ledger."""
        loaded = {r[0] for r in self.conn.execute("SELECT page FROM loaded_pages WHERE run_id=?", (run_id,))}
        return [p for p in range(expected) if p not in loaded]
