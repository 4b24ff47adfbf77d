"""The data-quality report of a loaded run, computed with pandas from the typed columns, chunk by chunk."""

import os
import select
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from etl_common.db import DatabaseUrl, connect_reader, parse_url
from etl_common.runs import RunStatus

# The transformer's rules, named by the field each checks (transformer.validate.RULES), and the
# rule a record breaks by not being a JSON object at all. Every key is always in the report.
RULES = ("id", "firstName", "email", "age", "company.department")
NOT_AN_OBJECT = "record"
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-65")
_AGE_EDGES = (-np.inf, 25, 35, 45, 55, np.inf)  # left-closed: 24.5 is in 18-24, 25 in 25-34
# A run being loaded is looked at this often by the waiting child (one max(id) query), and read once this many
# rows are new: each read costs ~9 ms besides its rows (measured at 100,000 users: 2.6 s of CPU read at once,
# 2.9 s in 50 reads, 4.4 s in 200), and what is left for the end is at most this many rows or this old.
FOLLOW_S = 0.5
FOLLOW_ROWS = 2_000
CHUNK_ROWS = 5_000  # the report's peak at 100,000 users: 120 MB with 5,000 rows a chunk, 143 MB with 20,000

# Typed columns profiled: every record's (raw_users), then those only valid records have.
RAW_COLUMNS = ("user_id", "first_name", "last_name", "email", "username", "age", "gender", "department")
PROCESSED_COLUMNS = ("department_code", "title", "role", "city", "state", "user_agent")


class _Columns:
    """Running null and blank counts of some columns over the chunks of one table."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.nulls = dict.fromkeys(names, 0)
        self.blanks = dict.fromkeys(names, 0)

    def add(self, chunk: pd.DataFrame) -> None:
        for name in self.names:
            col = chunk[name]
            self.nulls[name] += int(col.isna().sum())
            if col.dtype == object:
                # A plain loop, not .str.strip(): pandas' string methods grew the process by ~35 MB
                # over 300,000 rows (measured), this does not.
                self.blanks[name] += sum(1 for v in col.to_numpy() if type(v) is str and not v.strip())

    def result(self, distinct: dict[str, int]) -> dict[str, dict[str, int]]:
        return {n: {"nulls": self.nulls[n], "blanks": self.blanks[n], "distinct": distinct[n]} for n in self.names}


def _distinct(conn: sqlite3.Connection, table: str, names: tuple[str, ...], run_id: str) -> dict[str, int]:
    """Distinct non-null values per column, counted by the database, one column per query (PostgreSQL's path).

    An exact count needs every distinct value (or its hash) kept until the end: in this process
    that grows with the run; the database keeps them in a temporary b-tree that spills to a temporary
    file, so the process stays flat (122 MB at 300,000 users, measured on SQLite). One column at a time:
    eight in one query grew the process by ~90 MB at 300,000 (measured).
    """
    out = {}
    for name in names:
        row = conn.execute(f"SELECT count(DISTINCT {name}) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()
        out[name] = int(row[0])
    return out


def _chunks(conn: Any, sql: str, args: tuple[Any, ...], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """DataFrames of at most ``chunk_rows`` rows, read with fetchmany (as pandas' read_sql does) on either engine."""
    cur = conn.execute(sql, args)
    columns = [d[0] for d in cur.description]
    while rows := cur.fetchmany(chunk_rows):
        yield pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)


# The three tables of a run, with the typed columns profiled in each (invalid_users: none, its rules are counted).
TABLES = {"raw_users": RAW_COLUMNS, "processed_users": PROCESSED_COLUMNS, "invalid_users": ()}


class Tally:
    """The report's counts over the rows of one run read so far; rows are added by id ranges as pages commit.

    On SQLite the rows are read by ranges of the table's integer key (the rows a commit adds are the next ids:
    one writer), and the distinct values of each column are kept in the connection's temporary tables (SQLite
    spills them to a temporary file, so this process stays flat). ``matches`` tells whether what was read is
    exactly the run's rows in the final snapshot; when not (rows deleted, ids committed out of order), the
    report is computed again from the start.
    """

    def __init__(self, conn: Any, engine: str, run_id: str, chunk_rows: int) -> None:
        self.run_id, self.chunk_rows, self.engine = run_id, chunk_rows, engine
        self.raw, self.processed = _Columns(RAW_COLUMNS), _Columns(PROCESSED_COLUMNS)
        self.rows = dict.fromkeys(TABLES, 0)
        self.id_sums = dict.fromkeys(TABLES, 0)
        self.last: dict[str, int | None] = dict.fromkeys(TABLES)  # the highest id read; None: not started
        self.by_age: pd.Series | None = None
        self.by_department: pd.Series | None = None
        self.unclassified = 0
        self.rules = dict.fromkeys((*RULES, NOT_AN_OBJECT), 0)
        self.distinct_counts = {table: dict.fromkeys(names, 0) for table, names in TABLES.items()}
        if engine == "sqlite":
            conn.execute("PRAGMA query_only=OFF")  # temporary tables only: the file is opened read-only (mode=ro)
            for table, names in TABLES.items():
                for name in names:
                    conn.execute(f"DROP TABLE IF EXISTS temp.d_{table}_{name}")
                    # NOT NULL ON CONFLICT IGNORE: nulls are not values (count(DISTINCT) skips them too).
                    conn.execute(f"CREATE TEMP TABLE d_{table}_{name} (v UNIQUE NOT NULL ON CONFLICT IGNORE)")

    def read(self, conn: Any) -> None:
        """Add the run's rows committed since the last read (call inside one transaction)."""
        for table in TABLES:
            self._read(conn, table)

    def _read(self, conn: Any, table: str) -> None:
        names = TABLES[table]
        run = "run_id = ?"
        if self.engine == "sqlite":
            top = conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0]
            if self.last[table] is None:
                first = conn.execute(f"SELECT min(id) FROM {table} WHERE run_id = ?", (self.run_id,)).fetchone()[0]
                if first is None:
                    return
                self.last[table] = first - 1
            # The key's range, the run checked per row (+run_id: not by the run's index, which would list every
            # row of the run at each read).
            run = "+run_id = ?"
        else:
            top = conn.execute(f"SELECT max(id) FROM {table} WHERE run_id = ?", (self.run_id,)).fetchone()[0]
            self.last[table] = self.last[table] or 0
        low = self.last[table]
        if top is None or low is None or top <= low:
            return
        where = f"FROM {table} WHERE id > ? AND id <= ? AND {run}"
        args = (low, top, self.run_id)
        columns = {"raw_users": RAW_COLUMNS, "invalid_users": ("failed_rules",)}.get(
            table, ("age", "department", *PROCESSED_COLUMNS)
        )
        for chunk in _chunks(conn, f"SELECT id, {', '.join(columns)} {where}", args, self.chunk_rows):
            self.rows[table] += len(chunk)
            self.id_sums[table] += int(chunk["id"].sum())
            self._add(table, chunk)
        if self.engine == "sqlite":
            for name in names:
                new = conn.execute(f"INSERT OR IGNORE INTO d_{table}_{name} (v) SELECT {name} {where}", args).rowcount
                self.distinct_counts[table][name] += new
        self.last[table] = top

    def _add(self, table: str, chunk: pd.DataFrame) -> None:
        if table == "raw_users":
            self.raw.add(chunk)
        elif table == "processed_users":
            self.processed.add(chunk)
            # Summed as they come: a row per distinct age or department, however long the run.
            ages = chunk["age"].value_counts()
            self.by_age = ages if self.by_age is None else pd.concat([self.by_age, ages]).groupby(level=0).sum()
            departments = chunk.groupby(["department", "department_code"], dropna=False).size()
            if self.by_department is not None:
                departments = pd.concat([self.by_department, departments]).groupby(level=[0, 1], dropna=False).sum()
            self.by_department = departments
        else:
            named = chunk["failed_rules"].dropna()
            self.unclassified += len(chunk) - len(named)
            # Each row names a rule at most once, so a record breaking two rules counts once under each.
            for rule, n in Counter(r for v in named.to_numpy() for r in str(v).split(",") if r).items():
                self.rules[rule] = self.rules.get(rule, 0) + n

    def matches(self, conn: Any) -> bool:
        """Whether the rows read are exactly the run's rows now: their number and the sum of their ids."""
        for table in TABLES:
            count, total = conn.execute(
                f"SELECT count(*), coalesce(sum(id), 0) FROM {table} WHERE run_id = ?", (self.run_id,)
            ).fetchone()
            if (int(count), int(total)) != (self.rows[table], self.id_sums[table]):
                return False
        return True

    def distinct(self, conn: Any, table: str) -> dict[str, int]:
        """Distinct non-null values per column of the table, over the rows read."""
        if self.engine != "sqlite":
            return _distinct(conn, table, TABLES[table], self.run_id)
        return self.distinct_counts[table]

    def report(self, conn: Any) -> dict[str, Any]:
        records, valid, invalid = (self.rows[t] for t in TABLES)
        departments = self.by_department.items() if self.by_department is not None else []
        return {
            "run_id": self.run_id,
            "records": records,
            "valid": valid,
            "invalid": invalid,
            "invalid_rate": _rate(invalid, records),
            "rules": self.rules,
            "unclassified": self.unclassified,
            "columns": {
                **self.raw.result(self.distinct(conn, "raw_users")),
                **self.processed.result(self.distinct(conn, "processed_users")),
            },
            "age": _age(self.by_age if self.by_age is not None else pd.Series(dtype="int64")),
            "departments": [
                {"department": dept, "code": code, "count": int(n)}
                for (dept, code), n in sorted(departments, key=lambda kv: (-kv[1], str(kv[0][0])))
            ],
        }


def _age(counts: pd.Series) -> dict[str, Any]:
    """min, max, mean, exact median and band counts from ``age -> number of records``."""
    counts = counts[counts > 0].sort_index()
    bands = dict.fromkeys(AGE_BANDS, 0)
    n = int(counts.sum())
    if n == 0:
        return {"count": 0, "min": None, "max": None, "mean": None, "median": None, "bands": bands}
    ages = counts.index.to_numpy(dtype=float)
    cumulative = counts.to_numpy().cumsum()

    def nth(k: int) -> float:  # the k-th smallest age (0-based)
        return float(ages[int(np.searchsorted(cumulative, k, side="right"))])

    banded = counts.groupby(pd.cut(counts.index, _AGE_EDGES, right=False, labels=AGE_BANDS), observed=False).sum()
    bands.update({str(k): int(v) for k, v in banded.items()})
    return {
        "count": n,
        "min": float(ages[0]),
        "max": float(ages[-1]),
        "mean": round(float((ages * counts.to_numpy()).sum() / n), 3),
        "median": (nth((n - 1) // 2) + nth(n // 2)) / 2,
        "bands": bands,
    }


def _rate(invalid: int, records: int) -> float:
    return round(invalid / records, 6) if records else 0.0


def _open(db_path: str | Path | DatabaseUrl) -> tuple[Any, str]:
    """A read-only connection to the database and its engine."""
    conn: Any
    if isinstance(db_path, DatabaseUrl) and db_path.engine == "postgresql":
        from saver.pgconn import Connection

        conn, engine = Connection(connect_reader(db_path)), "postgresql"  # type: ignore[arg-type]
    else:
        path = db_path.path if isinstance(db_path, DatabaseUrl) and db_path.path else str(db_path)
        conn, engine = connect_reader(path), "sqlite"
    conn.row_factory = None
    return conn, engine


def compute(
    db_path: str | Path | DatabaseUrl, run_id: str, chunk_rows: int = CHUNK_ROWS, follow: "Follow | None" = None
) -> dict[str, Any]:
    """The report of ``run_id`` (see docs/api.md, ``GET /etl_runs/{id}/quality``).

    Reads the run's typed columns in chunks of ``chunk_rows`` rows over a read-only connection,
    so memory does not grow with the run. With ``follow`` (the rows read while the run loaded), only the rows
    committed since are read, unless what was read no longer matches the run (then all of them again).
    Raises ``LookupError`` for an unknown run.
    """
    conn, engine = (follow.conn, follow.engine) if follow else _open(db_path)
    try:
        conn.execute("BEGIN")  # one snapshot for every read of the report
        run = conn.execute("SELECT id FROM etl_runs WHERE run_id = ?", (run_id,)).fetchone()
        if run is None:
            raise LookupError(f"no run {run_id!r}")
        tally = follow.tally if follow and follow.run_id == run_id else Tally(conn, engine, run_id, chunk_rows)
        tally.read(conn)
        if follow and not tally.matches(conn):
            tally = Tally(conn, engine, run_id, chunk_rows)
            tally.read(conn)
        report = tally.report(conn)
        report["previous"] = _previous(conn, int(run[0]), report)
        conn.execute("COMMIT")
        return report
    finally:
        conn.close()


class Follow:
    """The report of a run being loaded, read as its pages commit (SQLite), so little is left after the last page."""

    def __init__(self, db_path: str | Path | DatabaseUrl, run_id: str, chunk_rows: int = CHUNK_ROWS) -> None:
        self.run_id = run_id
        self.conn, self.engine = _open(db_path)
        self.tally = Tally(self.conn, self.engine, run_id, chunk_rows)

    def step(self) -> None:
        """Read the rows committed since the last step, in one short read transaction (never holding the WAL)."""
        if self.engine != "sqlite":
            return  # PostgreSQL: several savers' ids commit out of order; the report reads the run at the end
        last = self.tally.last["raw_users"]
        top = self.conn.execute("SELECT max(id) FROM raw_users").fetchone()[0]
        if last is not None and (top or 0) - last < FOLLOW_ROWS:
            return
        self.conn.execute("BEGIN")
        try:
            self.tally.read(self.conn)
        finally:
            self.conn.execute("COMMIT")


def _previous(conn: sqlite3.Connection, row_id: int, report: dict[str, Any]) -> dict[str, Any] | None:
    """The change against the newest succeeded run before this one; None when there is none."""
    prev = conn.execute(
        f"SELECT run_id, raw_count, invalid_count FROM etl_runs WHERE status = '{RunStatus.SUCCEEDED}' AND id < ? "
        "ORDER BY id DESC LIMIT 1",
        (row_id,),
    ).fetchone()
    if prev is None:
        return None
    prev_run, prev_records, prev_invalid = prev
    before = dict(
        conn.execute(
            "SELECT department_code, count(*) FROM processed_users WHERE run_id = ? GROUP BY department_code",
            (prev_run,),
        ).fetchall()
    )
    now: dict[str, int] = {}
    for d in report["departments"]:
        now[d["code"]] = now.get(d["code"], 0) + d["count"]
    prev_rate = _rate(prev_invalid, prev_records)
    return {
        "run_id": prev_run,
        "records": prev_records,
        "invalid_rate": prev_rate,
        "invalid_rate_change": round(report["invalid_rate"] - prev_rate, 6),
        "departments_change": {
            code: now.get(code, 0) - before.get(code, 0) for code in sorted(set(now) | set(before), key=str)
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m saver.quality DB_PATH RUN_ID``: the report as one JSON line on stdout (see ``saver.report``).

    ``python -m saver.quality DB_PATH --follow RUN_ID``: start now (pandas imported) and read RUN_ID's rows as its
    pages commit, until a line on stdin names the run to report (RUN_ID, or another run: read whole); end of file
    ends the process with nothing printed. DB_PATH ``-`` reads the database URL from ``ETL_DATABASE_URL``
    (PostgreSQL: kept out of the process list; no rows read before the line)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or (len(args) == 3 and args[1] != "--follow"):
        print("usage: python -m saver.quality DB_PATH [--follow] RUN_ID", file=sys.stderr)
        return 2
    try:
        target = parse_url(os.environ.get("ETL_DATABASE_URL", "")) if args[0] == "-" else args[0]
        follow = None
        if len(args) == 3:
            follow, run_id = _follow(target, args[2])
            if not run_id:
                return 0  # the saver stopped, or dropped this child before its run was loaded
        else:
            run_id = args[1]
        report = compute(target, run_id, follow=follow)
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    return 0


def _follow(target: str | DatabaseUrl, run_id: str) -> tuple[Follow | None, str]:
    """Read ``run_id``'s rows every ``FOLLOW_S`` until stdin names the run to report; that name, and the rows read.

    A step that fails gives the following up (the report then reads the run whole): it must never cost the report.
    """
    follow: Follow | None = None
    if isinstance(target, DatabaseUrl) and target.engine == "postgresql":
        import saver.pgconn  # noqa: F401 (imported while waiting, as pandas is)
    else:
        try:
            follow = Follow(target, run_id)
        except Exception as exc:  # whatever it is, the report reads the run whole at the end
            print(f"cannot follow {run_id}, the report reads the run whole: {exc!r}", file=sys.stderr)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], FOLLOW_S)
        if ready:
            return follow, sys.stdin.readline().strip()
        if follow is None:
            continue
        try:
            follow.step()
        except Exception as exc:  # whatever it is, the report reads the run whole at the end
            print(f"following {run_id} stopped, the report reads the run whole: {exc!r}", file=sys.stderr)
            follow.conn.close()
            follow = None


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Without the interpreter's teardown: with pandas loaded it took ~0.27 s of CPU (measured), after the report,
    # while the run waits for this process to end. Nothing is left to release: the connection is closed.
    os._exit(code)
