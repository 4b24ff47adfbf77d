"""Several savers on one PostgreSQL killed with SIGKILL mid-run and mid-finish: the run still ends exact, once."""

import hashlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import psycopg
import pytest

import testbed as tb
from etl_common.keys import GROUP_SAVER
from etl_common.runs import EventType
from saver.store import FINISH_LOCK
from tests.faults.conftest import wait_for
from tests.support import Pipeline, lines

# A claim of a dead saver's pages is due after this idle time (the production default is 30 s).
CLAIM_IDLE_MS = "1000"
# Long enough that a finisher stalled on the paused SFTP server is still waiting when it is killed.
SFTP_TIMEOUT_S = "120"
# What the run of _pipeline's source notices, whoever loads and finishes it: its invalid users include four whose
# id is "abc" (so three repeated ids), and twelve records that break the contract's types.
# The broken records' ids ("abc") are not user ids: they never make the pages look overlapped.
DATA_WARNINGS = [
    "contract users.v1: 12 records broke it, loaded as they are (policy evolve): age (string x4; expected "
    "integer); company.department (null x4; expected string); email (null x4; expected string); id (string x4; "
    "expected integer)",
]


@pytest.fixture
def own_sftp(tmp_path) -> Iterator[tb.Sftp]:
    """An SFTP server of the test's own, which the test may pause (SIGSTOP), resume or stop; stopped afterwards."""
    server = tb.start_sftp(tmp_path / "sshd", tmp_path / "keys", tmp_path / "upload")
    yield server
    _signal(server, signal.SIGCONT)  # a paused sshd would wait for its SIGTERM
    server.stop()


def _signal(server: tb.Sftp, sig: signal.Signals) -> None:
    """Send ``sig`` to sshd and its sessions (its process group)."""
    assert server.proc is not None
    if server.proc.alive():
        os.killpg(server.proc.popen.pid, sig)


@contextmanager
def _hung(server: tb.Sftp) -> Iterator[None]:
    """The SFTP server hangs: the kernel accepts connections, sshd never answers (no banner) until resumed."""
    _signal(server, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal(server, signal.SIGCONT)


def _pipeline(
    make_source, make_pipeline, postgres_server, sftp: tb.Sftp | None = None, page_delay_s: float = 0.0, **extra: str
) -> Pipeline:
    """1,000 users in ten pages of 100, 40 of them invalid, through savers on a new PostgreSQL database; each page
    answered after ``page_delay_s``."""
    source = make_source(count=1000, bad_every=25)
    if page_delay_s:
        source.faults([{"skip": None, "delay_s": page_delay_s, "status": 200, "times": -1}])
    upload = {"upload_dir": sftp.upload_dir} if sftp else {}
    p = make_pipeline(source, **upload, ETL_DATABASE_URL=postgres_server.create_database(), **extra)
    if sftp:
        p.sftp_env.update(sftp.env())
    return p


def _start_saver(p: Pipeline, tag: str, consumer: str | None = None) -> tb.Proc:
    """A saver with its own consumer name and data folder (separate machines share no volume), once ready."""
    consumer = consumer or tag
    return p.stack.start(
        "saver",
        tag=tag,
        **p.env(ETL_CONSUMER_NAME=consumer, ETL_BATCH_PAGES="1", ETL_DATA_DIR=str(p.tmp / f"data-{consumer}")),
    )


def _pending_pages(p: Pipeline, consumer: str) -> int:
    """Processed pages the consumer has read and not acked (its pending entries in the saver group)."""
    return len(p.redis.xpending_range(p.keys.processed_stream, GROUP_SAVER, "-", "+", 1000, consumername=consumer))


def _ledger_pages(p: Pipeline) -> list[int]:
    try:
        with p.db() as db:
            return [r[0] for r in db.execute("SELECT page FROM loaded_pages ORDER BY page")]
    except (sqlite3.Error, psycopg.Error):  # the saver has not migrated the database yet
        return []


def _finish_locks(p: Pipeline) -> int:
    """Finishing locks (saver.store.claim's advisory locks) granted in this database."""
    with p.db() as db:
        return db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid::bigint = ? AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (FINISH_LOCK,),
        ).fetchone()[0]


def _finishing(p: Pipeline, savers: list[tb.Proc]) -> list[str]:
    """The savers stalled in the upload of a loaded run: files written (logged, in the ledger, not uploaded) while
    the run is ``loaded`` and its finishing lock is held."""
    runs = p.runs()
    if not runs or runs[-1]["status"] != "loaded" or _finish_locks(p) != 1:
        return []
    with p.db() as db:
        files = db.execute("SELECT uploaded_at FROM uploaded_files WHERE run_id=?", (runs[-1]["run_id"],)).fetchall()
    if len(files) != 3 or any(f["uploaded_at"] for f in files):
        return []
    return [s.name for s in savers if s.alive() and "files written" in s.output()]


def _succeeded_logs(savers: list[tb.Proc]) -> dict[str, int]:
    return {s.name: s.output().count('"run succeeded"') for s in savers}


def _assert_run_exact(p: Pipeline, run: sqlite3.Row, finisher_data: str) -> None:
    """The run succeeded once: each user once in each table, ten pages in the ledger, the three files equal to the
    tables locally and on the SFTP server, the upload ledger complete, no temporary file left, no error, the data's
    own warnings once."""
    rid = run["run_id"]
    assert run["status"] == "succeeded" and run["error"] is None, dict(run)
    # The data's own warnings, each once: a takeover repeats the finish's checks, never their warnings.
    assert orjson.loads(run["warnings"]) == DATA_WARNINGS, run["warnings"]
    assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (1000, 960, 40), dict(run)
    invalid = set(range(25, 1001, 25))
    assert _ledger_pages(p) == list(range(10))
    with p.db() as db:
        for table, expected in (
            ("raw_users", set(range(1, 1001))),
            ("processed_users", set(range(1, 1001)) - invalid),
            ("invalid_users", invalid),
        ):
            # A user by its place in the source (pages of 100, ids from 1): some invalid ones have no usable id.
            got = [r[0] for r in db.execute(f"SELECT page * 100 + position + 1 FROM {table} WHERE run_id=?", (rid,))]
            assert len(got) == len(set(got)) and set(got) == expected, f"{table}: {len(got)} rows"
        ids = [r[0] for r in db.execute("SELECT user_id FROM processed_users WHERE run_id=?", (rid,))]
        assert sorted(ids) == sorted(set(range(1, 1001)) - invalid)
        tables = {
            "raw_file": [
                orjson.loads(r[0])
                for r in db.execute("SELECT record FROM raw_users WHERE run_id=? ORDER BY page, position", (rid,))
            ],
            "processed_file": [
                orjson.loads(r[0])
                for r in db.execute(
                    "SELECT record FROM processed_records WHERE run_id=? ORDER BY page, position", (rid,)
                )
            ],
            # The dead-letter line: the record as received and why it is invalid.
            "dlq_file": [
                {**orjson.loads(r[0]), "error_reason": r[1]}
                for r in db.execute(
                    "SELECT record, error_reason FROM invalid_users WHERE run_id=? ORDER BY page, position", (rid,)
                )
            ],
        }
        uploaded = {f["kind"]: f for f in db.execute("SELECT * FROM uploaded_files WHERE run_id=?", (rid,))}
    for key, rows in tables.items():
        remote = p.upload_dir / run[key]
        assert lines(remote) == rows, f"{run[key]} differs from its table"
        assert remote.read_bytes() == (p.tmp / finisher_data / run[key]).read_bytes()
    assert sorted(uploaded) == ["dlq", "processed", "raw"]
    for kind, key, count in (("raw", "raw_file", 1000), ("processed", "processed_file", 960), ("dlq", "dlq_file", 40)):
        f, remote = uploaded[kind], p.upload_dir / run[key]
        assert (f["name"], f["records"], f["bytes"]) == (run[key], count, remote.stat().st_size), dict(f)
        assert f["sha256"] == hashlib.sha256(remote.read_bytes()).hexdigest()
        assert f["uploaded_at"] and f["remote_path"] == str(remote), dict(f)
    assert not [x.name for x in p.upload_dir.rglob("*.part")], "a temporary file left on the SFTP server"
    with p.db() as db:
        quality = db.execute("SELECT report FROM run_quality WHERE run_id=?", (rid,)).fetchone()
    assert quality is not None and orjson.loads(quality[0])["records"] == 1000
    # One phase 3 event: the run is announced as succeeded once, whoever finished it.
    events = [orjson.loads(fields[b"data"]) for _, fields in p.redis.xrange(p.keys.events_stream)]
    assert [e["run_id"] for e in events if e["type"] == EventType.PHASE3_COMPLETE] == [rid]


def test_a_saver_killed_with_pages_read_not_acked_leaves_them_to_the_other(
    make_source, make_pipeline, postgres_server, stopwatch
):
    """SIGKILL while it holds pages it read and cannot commit: the other saver claims them once idle; exact run."""
    # Pages handed on one at a time, slower than the savers load them: the run is under way for a few seconds.
    p = _pipeline(make_source, make_pipeline, postgres_server, page_delay_s=0.3, ETL_CLAIM_IDLE_MS=CLAIM_IDLE_MS)
    killed, other = _start_saver(p, "saver-a"), _start_saver(p, "saver-b")
    p.start("transformer")
    extractor = p.start("extractor", "once", ETL_FETCH_CONCURRENCY="1")
    wait_for(lambda: len(_ledger_pages(p)) >= 2, timeout_s=60, what="the first pages in the ledger")
    # The test holds raw_users against writes: a saver that reads a page now cannot commit it, so its pending
    # entry stays pending until the kill (PostgreSQL rolls back the dead saver's transaction).
    with psycopg.connect(p.database) as blocker:
        blocker.execute("LOCK TABLE raw_users IN EXCLUSIVE MODE")
        wait_for(lambda: _pending_pages(p, "saver-a") >= 1, timeout_s=60, what="saver-a holding a page it read")
        killed.kill9()
        stopwatch.fault()
        held = _pending_pages(p, "saver-a")
        loaded_before = len(_ledger_pages(p))
    assert held >= 1 and loaded_before < 10, (held, loaded_before)
    assert extractor.popen.wait(120) == 0, extractor.output()[-2000:]
    run = p.wait_run(timeout_s=120)
    stopwatch.recovered()
    _assert_run_exact(p, run, "data-saver-b")
    assert _pending_pages(p, "saver-a") == 0
    assert '"claimed idle entries"' in other.output(), other.output()[-3000:]
    assert _succeeded_logs([killed, other]) == {"saver-a": 0, "saver-b": 1}


def test_the_finisher_killed_mid_upload_is_taken_over_by_the_other_saver(
    make_source, make_pipeline, postgres_server, own_sftp, stopwatch
):
    """SIGKILL the saver holding the run's finishing lock while its upload waits on a hung server: the other
    saver takes the lock, writes and uploads the files and marks the run succeeded, once."""
    p = _pipeline(make_source, make_pipeline, postgres_server, own_sftp, ETL_SFTP_TIMEOUT_S=SFTP_TIMEOUT_S)
    savers = [_start_saver(p, "saver-a"), _start_saver(p, "saver-b")]
    p.start("transformer")
    with _hung(own_sftp):
        assert p.extract().returncode == 0
        stalled = wait_for(lambda: _finishing(p, savers), timeout_s=90, what="a saver stalled in the upload")
        assert len(stalled) == 1, stalled
        holder = p.procs[stalled[0]]
        survivor = next(s for s in savers if s is not holder)
        holder.kill9()
        stopwatch.fault()
        # The lock went with the dead saver's session: the survivor takes the run over while the server still hangs.
        wait_for(lambda: _finishing(p, [survivor]), timeout_s=60, what=f"{survivor.name} finishing the run")
    run = p.wait_run(timeout_s=120)
    stopwatch.recovered()
    _assert_run_exact(p, run, f"data-{survivor.name}")
    assert _succeeded_logs(savers) == {holder.name: 0, survivor.name: 1}


def test_a_lone_saver_killed_mid_upload_finishes_the_run_after_a_restart(
    make_source, make_pipeline, postgres_server, own_sftp, stopwatch
):
    """No other saver: the restarted one (same consumer) finds the run loaded, unlocked, and finishes it."""
    p = _pipeline(make_source, make_pipeline, postgres_server, own_sftp, ETL_SFTP_TIMEOUT_S=SFTP_TIMEOUT_S)
    first = _start_saver(p, "saver-a")
    p.start("transformer")
    with _hung(own_sftp):
        assert p.extract().returncode == 0
        wait_for(lambda: _finishing(p, [first]), timeout_s=90, what="the saver stalled in the upload")
        first.kill9()
        stopwatch.fault()
        again = _start_saver(p, "saver-a-restarted", consumer="saver-a")
        wait_for(lambda: _finishing(p, [again]), timeout_s=60, what="the restarted saver finishing the run")
    run = p.wait_run(timeout_s=120)
    stopwatch.recovered()
    _assert_run_exact(p, run, "data-saver-a")
    assert _succeeded_logs([first, again]) == {"saver-a": 0, "saver-a-restarted": 1}


def test_a_saver_killed_while_its_run_waits_for_the_sftp_server_leaves_the_run_to_the_other(
    make_source, make_pipeline, postgres_server, own_sftp, stopwatch
):
    """The finisher found the server down (``upload_pending``, retried later) and was killed: the other saver, which
    never tried that run, retries it once the server is back, and the run succeeds once."""
    # Tries 5 s apart: the other saver, which takes the run on after the first wait, is caught before its first try.
    p = _pipeline(
        make_source, make_pipeline, postgres_server, own_sftp, ETL_UPLOAD_RETRY_S="5", ETL_UPLOAD_RETRY_MAX_S="5"
    )
    savers = [_start_saver(p, "saver-a"), _start_saver(p, "saver-b")]
    p.start("transformer")
    own_sftp.stop()
    assert p.extract().returncode == 0
    pending = p.wait_run(("upload_pending",), timeout_s=90)
    assert "unreachable" in pending["error"], pending["error"]
    deferred = [s for s in savers if "run is upload_pending" in s.output()]
    assert len(deferred) == 1, [s.name for s in deferred]
    holder = deferred[0]
    survivor = next(s for s in savers if s is not holder)
    holder.kill9()
    stopwatch.fault()
    own_sftp.start()  # back on the same port
    run = p.wait_run(timeout_s=120)
    stopwatch.recovered()
    _assert_run_exact(p, run, f"data-{survivor.name}")
    assert _succeeded_logs(savers) == {holder.name: 0, survivor.name: 1}


def test_a_saver_whose_postgresql_connection_is_closed_stops_in_one_line_and_its_restart_ends_the_run_exact(
    make_source, make_pipeline, postgres_server
):
    """PostgreSQL ends the saver's session mid-run (what a restart does to it): one line naming where and the next
    step, exit 1, no traceback; the pages it had not acked are loaded by the restarted saver, the run exact."""
    p = _pipeline(make_source, make_pipeline, postgres_server, page_delay_s=0.3)
    saver = _start_saver(p, "saver-a")
    p.start("transformer")
    extractor = p.start("extractor", "once", ETL_FETCH_CONCURRENCY="1")
    wait_for(lambda: len(_ledger_pages(p)) >= 2, timeout_s=60, what="the first pages in the ledger")
    with psycopg.connect(p.database, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'etl-saver' AND datname = current_database()) t"
        ).fetchone()[0]
    assert ended >= 1
    assert saver.popen.wait(60) == 1, saver.output()[-3000:]
    assert len(_ledger_pages(p)) < 10
    output = saver.output()
    assert "Traceback" not in output and postgres_server.password not in output, output[-3000:]
    # Its last line (a step that keeps nothing but notes, such as the page schemas, may have logged the cut first).
    last = lines(saver.log)[-1]
    assert last["level"] == "error", output[-3000:]
    assert f"lost the connection to PostgreSQL at 127.0.0.1:{postgres_server.port}" in last["event"], last
    _start_saver(p, "saver-a")  # what a supervisor does
    assert extractor.popen.wait(120) == 0, extractor.output()[-2000:]
    run = p.wait_run(timeout_s=120)
    _assert_run_exact(p, run, "data-saver-a")
