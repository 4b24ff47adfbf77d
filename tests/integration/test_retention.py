"""Retention on real runs: rows, local and remote files and dead letters removed exactly as the settings say."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone

import httpx

import testbed as tb
from etl_common.db import connect_writer
from etl_common.keys import GROUP_SAVER
from etl_common.streams import Entry, GroupReader, encode
from saver import migrate
from saver.retention_policy import Bound, Policy, plan
from tests.faults.conftest import wait_for

TABLES = ("raw_users", "processed_users", "invalid_users")


def _dead_letter(p, run_id: str, page: int) -> None:
    """A processed page of ``run_id`` dead-lettered by the saver's group, as the saver does it."""
    reader = GroupReader(p.redis, GROUP_SAVER, "test", [p.keys.processed_stream], keys=p.keys)
    payload = {"run_id": run_id, "page": page, "raw": [], "valid": [], "invalid": []}
    fields = {str(k).encode(): v for k, v in encode(payload).items()}  # as read from Redis
    reader.dead_letter(Entry(p.keys.processed_stream, f"{page + 1}-0", fields), "test poison", delete=False)


def _reports(p) -> list[dict]:
    with closing(p.db()) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT report FROM retention_log ORDER BY id")]


def _remote(p, run, name_key: str):
    return p.upload_dir / run[name_key]


def test_retention_after_each_run_removes_exactly_what_the_settings_say(make_source, make_pipeline):
    source = make_source(count=150, bad_every=5)
    ops = tb.free_port()
    p = make_pipeline(
        source,
        ETL_RETENTION_ROWS_RUNS="2",
        ETL_RETENTION_FILES_RUNS="3",
        ETL_RETENTION_REMOTE_RUNS="1",
        ETL_RETENTION_DEAD_LETTERS_RUNS="2",
    )
    p.start("transformer")
    saver = p.start("saver", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    runs = []
    for i in range(4):
        done = p.extract()
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(tb.wait_for_run(p.db_path, ("succeeded",), count=i + 1, logs=p.logs))
        wait_for(lambda n=i + 1: len(_reports(p)) >= n, what=f"retention after run {i + 1}")
        _dead_letter(p, runs[-1]["run_id"], 0)
        _dead_letter(p, runs[-1]["run_id"], 1)
        time.sleep(1.1)  # the runs' file names differ by their start second
    ids = [r["run_id"] for r in runs]
    reports = _reports(p)
    assert [r["trigger"] for r in reports] == ["after_run"] * 4 and not any(r["dry_run"] for r in reports)

    with closing(p.db()) as conn:
        # Rows: the two oldest runs lose theirs; headers, ledger and quality reports all stay.
        for table in TABLES:
            counts = {
                rid: conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (rid,)).fetchone()[0] for rid in ids
            }
            expected = {"raw_users": 150, "processed_users": 120, "invalid_users": 30}[table]
            assert counts == {ids[0]: 0, ids[1]: 0, ids[2]: expected, ids[3]: expected}, table
        assert conn.execute("SELECT count(*) FROM etl_runs").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM run_quality").fetchone()[0] == 4
        assert conn.execute("SELECT count(DISTINCT run_id) FROM loaded_pages").fetchone()[0] == 4
        removed_at = dict(conn.execute("SELECT run_id, rows_removed_at FROM etl_runs").fetchall())
        assert [bool(removed_at[r]) for r in ids] == [True, True, False, False]
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # a new database vacuums incrementally

    # Local files: only the oldest run's are gone; remote files: only the latest run's stay.
    for i, run in enumerate(runs):
        for key in ("raw_file", "processed_file", "dlq_file"):
            assert (p.data_dir / run[key]).exists() == (i > 0), (i, key)
            assert _remote(p, run, key).exists() == (i == 3), (i, key)

    # Dead letters: those of the two oldest runs are gone, each removal audited.
    left = [f[b"run_id"].decode() for _, f in p.redis.xrange(p.keys.dead_stream)]
    assert sorted(left) == sorted([ids[2], ids[2], ids[3], ids[3]])
    audit = p.redis.xrange(p.keys.dead_audit)
    assert sorted(f[b"run_id"].decode() for _, f in audit) == sorted([ids[0], ids[0], ids[1], ids[1]])
    assert {f[b"action"] for _, f in audit} == {b"expire"} and {f[b"actor"] for _, f in audit} == {b"retention"}
    assert p.redis.hget(p.keys.dead_counts, ids[0]) is None and p.redis.hget(p.keys.dead_counts, ids[3]) == b"2"

    # The reports add up to what was removed, and so do the saver's metrics.
    total_rows = sum(sum(r["removed"]["rows"].values()) for r in reports)
    assert total_rows == 2 * 300
    assert sum(r["removed"]["files"] for r in reports) == 3
    assert sum(r["removed"]["remote"] for r in reports) == 9
    assert sum(r["removed"]["dead_letters"] for r in reports) == 4
    assert sum(r["bytes_freed"]["database"] for r in reports) > 0
    assert all(r["vacuum"] == "incremental" for r in reports)
    assert sum(r["bytes_freed"]["database_returned"] for r in reports) > 0
    with closing(p.db()) as conn:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # every freed page went back
    metrics = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=5).text
    assert f'etl_retention_removed_total{{kind="rows"}} {float(total_rows)}' in metrics
    assert 'etl_retention_removed_total{kind="remote"} 9.0' in metrics
    assert saver.alive()


def test_retention_on_request_plans_then_applies(make_source, make_pipeline):
    """A retention_requested event (as the API sends it): the dry run removes nothing, then the same is applied."""
    source = make_source(count=120)
    p = make_pipeline(source, ETL_RETENTION_AFTER_RUN="false", ETL_RETENTION_HEADERS_RUNS="1")
    p.start_workers()
    runs = p.load_runs([source, source])
    old = runs[0]["run_id"]
    before = p.count("raw_users", old)
    for request_id, dry in (("plan-1", True), ("apply-1", False)):
        event = {"type": "retention_requested", "request_id": request_id, "dry_run": dry, "trigger": "test"}
        p.redis.xadd(p.keys.events_stream, encode(event))
        report = wait_for(lambda rid=request_id: [r for r in _reports(p) if r["request_id"] == rid], what=request_id)[0]
        assert report["runs"]["headers"] == [old] and report["protected"] == [runs[1]["run_id"]]
        assert report["removed"]["rows"]["raw_users"] == before == 120
        assert report["removed"]["files"] == 3 and report["removed"]["remote"] == 3
        if dry:
            assert p.count("raw_users", old) == 120 and (p.data_dir / runs[0]["raw_file"]).exists()
    assert [r["run_id"] for r in p.runs()] == [runs[1]["run_id"]]  # the header went too, as asked
    assert not (p.data_dir / runs[0]["raw_file"]).exists() and not _remote(p, runs[0], "raw_file").exists()
    assert (p.data_dir / runs[1]["raw_file"]).exists() and _remote(p, runs[1], "raw_file").exists()


def _db_with_runs(path, statuses: list[tuple[str, int]]) -> sqlite3.Connection:
    conn = connect_writer(path)
    migrate.migrate(conn)
    now = datetime.now(timezone.utc)
    for i, (status, days_ago) in enumerate(statuses):
        ts = (now - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        conn.execute("INSERT INTO etl_runs (run_id, run_timestamp, status) VALUES (?,?,?)", (f"r{i}", ts, status))
    return conn


def test_runs_in_progress_and_the_latest_success_are_never_chosen(tmp_path):
    # Oldest first: an old success, a run stuck in each non-final status, failures, the latest success, a failure.
    statuses = [
        ("succeeded", 40),
        ("running", 39),
        ("extracted", 38),
        ("transformed", 37),
        ("loaded", 36),
        ("upload_pending", 35),
        ("failed", 34),
        ("succeeded", 33),
        ("failed", 32),
    ]
    with closing(_db_with_runs(tmp_path / "d.db", statuses)) as conn:
        now = datetime.now(timezone.utc)
        everything = Policy({k: Bound(days=1) for k in ("rows", "files", "remote", "dead_letters", "headers")})
        chosen = plan(conn, everything, now)
        assert chosen["runs"]["rows"] == ["r8", "r6", "r0"]  # newest first; a failure newer than the success too
        assert sorted(chosen["protected"]) == ["r1", "r2", "r3", "r4", "r5", "r7"]
        assert chosen["runs"]["headers"] == chosen["runs"]["files"] == ["r8", "r6", "r0"]

        def rows_only(bound: Bound) -> list[str]:
            unbounded = dict.fromkeys(("files", "remote", "dead_letters", "headers"), Bound())
            return plan(conn, Policy({**unbounded, "rows": bound}), now)["runs"]["rows"]

        # By count: the newest two runs are kept whatever they are, the rest by status; by age; both (either breaks).
        assert rows_only(Bound(runs=2)) == ["r6", "r0"]
        assert rows_only(Bound(days=35)) == ["r0"]
        assert rows_only(Bound(days=35, runs=2)) == ["r6", "r0"]
        assert rows_only(Bound()) == []


def test_while_sftp_is_down_remote_files_and_headers_wait_and_the_report_says_why(make_source, make_pipeline):
    source = make_source(count=50)
    p = make_pipeline(source, ETL_RETENTION_AFTER_RUN="false", ETL_RETENTION_HEADERS_RUNS="1")
    p.start_workers()
    old, latest = p.load_runs([source, source])
    p.procs["saver"].stop()

    def apply(request_id: str, **env: str) -> dict:
        saver = p.start("saver", tag=f"saver-{request_id}", **env)
        event = {"type": "retention_requested", "request_id": request_id, "dry_run": False, "trigger": "test"}
        p.redis.xadd(p.keys.events_stream, encode(event))
        try:
            return wait_for(lambda: [r for r in _reports(p) if r["request_id"] == request_id], what=request_id)[0]
        finally:
            saver.stop()

    down = apply("down", ETL_SFTP_PORT=str(tb.free_port()), ETL_SFTP_TIMEOUT_S="2")
    assert len(down["errors"]) == 1 and "remote files kept for now" in down["errors"][0]
    assert down["removed"]["rows"]["raw_users"] == 50 and down["removed"]["files"] == 3
    assert down["removed"]["remote"] == 0 and down["removed"]["headers"] == 0
    assert _remote(p, old, "raw_file").exists() and [r["run_id"] for r in p.runs()] == [old["run_id"], latest["run_id"]]

    up = apply("up")
    assert up["errors"] == [] and up["removed"]["remote"] == 3 and up["removed"]["headers"] == 1
    assert not _remote(p, old, "raw_file").exists() and _remote(p, latest, "raw_file").exists()
    assert [r["run_id"] for r in p.runs()] == [latest["run_id"]]


def test_saver_vacuum_switches_a_database_made_before_to_incremental(tmp_path):
    """A database created without incremental vacuum (as before retention) is switched once by `saver vacuum`."""
    db = tmp_path / "old.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE kept (x TEXT)")
        conn.execute("INSERT INTO kept VALUES ('row')")
        conn.commit()
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")} | {"ETL_DB_PATH": str(db)}
    done = subprocess.run(
        [sys.executable, "-m", "saver", "vacuum"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and "auto_vacuum is now incremental" in done.stderr, done.stderr
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert conn.execute("SELECT x FROM kept").fetchall() == [("row",)]
        assert conn.execute("SELECT count(*) FROM retention_log").fetchone()[0] == 0  # migrated too
    again = subprocess.run(
        [sys.executable, "-m", "saver", "vacuum"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0 and "already incremental" in again.stderr
