"""End to end on real parts: services as processes, real Redis, real OpenSSH SFTP, the source server, and the
database on SQLite and, for the core (a run to succeeded, files equal to tables, a replayed page), PostgreSQL."""

import time

import orjson
import pytest

from tests.support import lines, real_users

MASKED = ("ssn", "ein")


def _run(make_source, make_pipeline, count=208, users=None, bad_every=0, **extra):
    source = make_source(count=count, users=users, bad_every=bad_every)
    p = make_pipeline(source, **extra)
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    return source, p, p.wait_run(("succeeded",))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_env(request) -> dict[str, str]:
    """The setting choosing the engine: none (SQLite's file, the default), or a fresh database of the test cluster."""
    if request.param == "sqlite":
        return {}
    return {"ETL_DATABASE_URL": request.getfixturevalue("postgres_server").create_database()}


class TestRealDataSet:
    """The real 208-user DummyJSON data set (generated 208 users when the copy is absent)."""

    def test_run_succeeds_with_every_user_valid_and_mapped(self, make_source, make_pipeline, engine_env):
        users = real_users()
        _, p, run = _run(make_source, make_pipeline, users=users, **engine_env)
        assert (run["valid_count"], run["invalid_count"], run["raw_count"]) == (208, 0, 208)
        assert p.count("processed_users", run["run_id"]) == 208
        assert p.count("raw_users", run["run_id"]) == 208
        assert sorted(p.user_ids("processed_users", run["run_id"])) == list(range(1, 209))
        with p.db() as db:
            codes = {r[0] for r in db.execute("SELECT DISTINCT department_code FROM processed_users")}
        assert "UNKNOWN" not in codes and len(codes) == 12

    def test_files_match_tables_and_upload_equals_local(self, make_source, make_pipeline, engine_env):
        _, p, run = _run(make_source, make_pipeline, users=real_users(), **engine_env)
        for key, table in (
            ("raw_file", "raw_users"),
            ("processed_file", "processed_users"),
            ("dlq_file", "invalid_users"),
        ):
            local = p.data_dir / run[key]
            remote = p.upload_dir / run[key]
            assert local.read_bytes() == remote.read_bytes()
            assert len(lines(local)) == p.count(table, run["run_id"])
        with p.db() as db:
            files = db.execute(
                "SELECT kind, bytes, remote_path, uploaded_at FROM uploaded_files WHERE run_id=?", (run["run_id"],)
            ).fetchall()
        assert {f["kind"] for f in files} == {"raw", "processed", "dlq"}
        assert all(f["uploaded_at"] for f in files)
        assert not list(p.upload_dir.rglob("*.part"))

    def test_no_password_anywhere_and_secrets_keep_four_characters(self, make_source, make_pipeline):
        users = real_users()
        _, p, run = _run(make_source, make_pipeline, users=users)
        passwords = [u["password"].encode() for u in (users or [])] or [b"pass"]
        blobs = [p.db_path.read_bytes()] + [f.read_bytes() for f in p.data_dir.rglob("*.jsonl")]
        blobs += [f.read_bytes() for f in p.upload_dir.rglob("*.jsonl")]
        for blob in blobs:
            assert b'"password"' not in blob
            if users:
                assert not any(pw in blob for pw in passwords[:50] if len(pw) > 6)
        first = lines(p.data_dir / run["processed_file"])[0]
        for field in MASKED:
            assert first[field].lstrip("*") == first[field][-4:] and first[field].startswith("*")
        assert first["bank"]["cardNumber"][:-4] == "*" * (len(first["bank"]["cardNumber"]) - 4)
        assert first["bank"]["iban"].startswith("*") and first["crypto"]["wallet"].startswith("*")
        if users:
            assert first["ssn"][-4:] == users[0]["ssn"][-4:]


def test_bad_records_go_to_invalid_users_and_dlq_with_every_reason(make_source, make_pipeline, engine_env):
    _, p, run = _run(make_source, make_pipeline, count=90, bad_every=10, **engine_env)
    assert (run["valid_count"], run["invalid_count"]) == (81, 9)
    with p.db() as db:
        rows = {
            r["position"] + 100 * r["page"]: r["error_reason"]
            for r in db.execute("SELECT * FROM invalid_users WHERE run_id=?", (run["run_id"],))
        }
    assert rows[9] == "age: 17 is below 18"
    assert rows[19] == "age: 66 is above 65"
    assert rows[29] == "email: missing"
    assert rows[39].startswith("email: 'not-an-email' is not a valid address")
    assert rows[49] == "firstName: is blank"
    assert rows[59] == "id: 'abc' is not an integer"
    assert rows[69] == "company.department: is empty"
    assert rows[79] == "age: 'thirty' is not a number"
    assert rows[89] == "firstName: is blank; email: missing; age: 12 is below 18; company.department: missing"
    dlq = lines(p.data_dir / run["dlq_file"])
    assert [d["error_reason"] for d in dlq] == [rows[k] for k in sorted(rows)]
    assert all("password" not in d for d in dlq)
    assert sorted(p.user_ids("processed_users", run["run_id"])) == [i for i in range(1, 91) if i % 10]


def test_pages_until_total_with_an_odd_last_page(make_source, make_pipeline):
    source, p, run = _run(make_source, make_pipeline, count=250)
    # Pages after the first are asked for several at once (ETL_FETCH_CONCURRENCY): compared as a set of requests.
    assert sorted((r["skip"], r["limit"]) for r in source.requests()) == [(0, 100), (100, 100), (200, 100)]
    assert run["raw_count"] == 250 and p.count("processed_users", run["run_id"]) == 250


def test_retries_5xx_and_honours_retry_after_on_429(make_source, make_pipeline):
    source = make_source(count=208)
    source.faults([{"skip": 0, "status": 429, "times": 1, "retry_after": 1}, {"skip": 100, "status": 503, "times": 2}])
    p = make_pipeline(source)
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout
    reqs = source.requests()
    assert sorted(r["skip"] for r in reqs) == [0, 0, 100, 100, 100, 200]
    at = {skip: [r["at"] for r in reqs if r["skip"] == skip] for skip in (0, 100)}
    # Retry-After: 1 is a floor over the configured 0.05 s delay.
    assert at[0][1] - at[0][0] >= 0.95
    assert at[100][1] - at[100][0] < 0.9
    assert p.wait_run()["valid_count"] == 208


def test_exhausted_retries_fail_then_resume_the_same_run(make_source, make_pipeline):
    source = make_source(count=250)
    source.faults([{"skip": 100, "status": 500, "times": -1}])
    p = make_pipeline(source)
    p.start_workers()
    failed = p.extract()
    assert failed.returncode != 0
    assert "after 3 retries" in failed.stdout
    cp = p.checkpoint()
    assert cp["next_skip"] == "100" and cp["next_page"] == "1"
    run = p.wait_run(("failed",))
    assert "skip=100" in run["error"]
    source.faults([], reset_stats=True)
    again = p.extract()
    assert again.returncode == 0, again.stdout
    assert sorted(r["skip"] for r in source.requests()) == [100, 200]
    done = p.wait_run()
    assert done["run_id"] == run["run_id"] == cp["run_id"]
    assert sorted(p.user_ids("processed_users", run["run_id"])) == list(range(1, 251))
    assert p.checkpoint() == {}


def test_page_delivered_twice_is_loaded_once(make_source, make_pipeline, engine_env):
    source = make_source(count=250)
    p = make_pipeline(source, **engine_env)
    p.start("transformer")
    assert p.extract().returncode == 0
    deadline = time.monotonic() + 20
    while p.redis.xlen(p.keys.processed_stream) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = p.redis.xrange(p.keys.processed_stream)
    assert len(entries) == 3
    for _, fields in entries:
        p.redis.xadd(p.keys.processed_stream, fields)
    p.start("saver")
    run = p.wait_run()
    time.sleep(0.5)
    assert p.count("processed_users", run["run_id"]) == 250
    with p.db() as db:
        assert db.execute("SELECT count(*) FROM loaded_pages").fetchone()[0] == 3
    assert p.redis.xlen(p.keys.processed_stream) == 0


def test_workers_down_during_the_run_process_it_when_back(make_source, make_pipeline):
    """The streams keep the work; pub/sub alone would have lost it."""
    source = make_source(count=208)
    p = make_pipeline(source)
    assert p.extract().returncode == 0
    assert p.redis.xlen(p.keys.raw_stream) == 4  # three pages and the end marker
    p.start_workers()
    run = p.wait_run()
    assert run["valid_count"] == 208


def test_pubsub_channels_carry_the_seed_keys_and_run_id(make_source, make_pipeline):
    source = make_source(count=120)
    p = make_pipeline(source)
    pubsub = p.redis.pubsub()
    pubsub.subscribe("channel:phase1_complete", "channel:phase2_complete", "channel:phase3_complete")
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run()
    got = {}
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.5)
        if m and m["type"] == "message":
            got[m["channel"].decode()] = orjson.loads(m["data"])
    rid = run["run_id"]
    assert got["channel:phase1_complete"] == {"run_id": rid, "raw_file": run["raw_file"], "records": 120, "pages": 2}
    assert got["channel:phase2_complete"] == {
        "run_id": rid,
        "raw_file": run["raw_file"],
        "processed_file": run["processed_file"],
        "dlq_file": run["dlq_file"],
        "valid_count": 120,
        "invalid_count": 0,
    }
    assert got["channel:phase3_complete"]["status"] == "succeeded"


def test_sftp_host_key_mismatch_is_refused(make_source, make_pipeline, tmp_path):
    other = tmp_path / "other_known_hosts"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    p0 = make_source(count=10)
    p = make_pipeline(p0)
    port = p.sftp_env["ETL_SFTP_PORT"]
    other.write_text(f"[127.0.0.1]:{port} " + " ".join((tmp_path / "impostor.pub").read_text().split()[:2]) + "\n")
    p.extra["ETL_SFTP_KNOWN_HOSTS"] = str(other)
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run(("upload_pending",))
    assert "does not match known_hosts" in run["error"]
    assert not list(p.upload_dir.rglob("*.jsonl"))
