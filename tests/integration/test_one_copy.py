"""One copy of each user per run (migration 0008), end to end on the real data set: the services load DummyJSON's
users (208 generated ones when the shared copy is absent); the processed file, ``/data/processed_users`` and its
exports are byte-identical to the old shape (each processed record stored whole: the raw record with
``department_code`` added last), while the database keeps only the raw JSON."""

import sqlite3
from contextlib import closing

import orjson
import pytest

from dummyjson.server import Source
from etl_common.db import connect_reader, connect_writer
from saver.files import write_run_files
from tests.integration.test_api import Api
from tests.support import Pipeline, SourceServer, real_users

QUERIES = [
    "limit=50",
    "limit=50&offset=50",
    "limit=7&offset=101",
    "limit=500",
    "sort=age&order=desc&limit=40&offset=20",
    "sort=department_code&limit=100",
    "q=an&limit=30",
    "department_code=ENG&limit=200",
    "department=engineering&limit=200",
]


def _old_shape(raw: str, code: object) -> bytes:
    """The processed record as the saver stored it before 0008: the raw record with department_code added last."""
    return orjson.dumps({**orjson.loads(raw), "department_code": code})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, redis_server, sftp_server):
    """The real users loaded by the services, and two APIs: over that database, and over a copy of it in the old
    shape (every processed record written back whole into processed_users.record, as before migration 0008)."""
    tmp = tmp_path_factory.mktemp("one-copy")
    (tmp / "upload").mkdir()
    server = SourceServer(Source(208, 0, 0, real_users())).start()  # generated when the copy is absent
    sftp = {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(tmp / "upload")}
    p = Pipeline(tmp / "p", redis_server.url, sftp, server.url)
    apis: list[Api] = []
    try:
        p.start_workers()
        done = p.extract()
        assert done.returncode == 0, done.stdout + done.stderr
        run = p.wait_run(("succeeded",))
        old_db = tmp / "old" / "data.db"
        old_db.parent.mkdir()
        with closing(connect_reader(p.db_path)) as src, closing(sqlite3.connect(old_db)) as dst:
            src.backup(dst)
        with closing(connect_writer(old_db)) as conn:
            rows = conn.execute(
                "SELECT p.id, p.department_code, r.record FROM processed_users p JOIN raw_users r "
                "USING (run_id, page, position)"
            ).fetchall()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "UPDATE processed_users SET record=? WHERE id=?",
                [(_old_shape(r["record"], r["department_code"]).decode(), r["id"]) for r in rows],
            )
            conn.execute("COMMIT")
        apis += [Api(p, "api-new"), Api(p, "api-old", ETL_DB_PATH=str(old_db))]
        yield p, run, apis[0], apis[1], tmp / "upload"
    finally:
        for api in apis:
            api.client.close()
        p.stop_all()
        server.stop()


def _expected_lines(p: Pipeline, run_id: str) -> bytes:
    with closing(p.db()) as db:
        rows = db.execute(
            "SELECT r.record, p.department_code FROM processed_users p JOIN raw_users r USING (run_id, page, position) "
            "WHERE run_id=? ORDER BY page, position",
            (run_id,),
        ).fetchall()
    assert len(rows) == 208
    return b"".join(_old_shape(raw, code) + b"\n" for raw, code in rows)


def test_the_database_keeps_one_json_copy_of_each_user(loaded):
    p, run, *_ = loaded
    with closing(p.db()) as db:
        kept = db.execute(
            "SELECT count(*), count(record) FROM processed_users WHERE run_id=?", (run["run_id"],)
        ).fetchone()
        raw = db.execute("SELECT count(record) FROM raw_users WHERE run_id=?", (run["run_id"],)).fetchone()[0]
    assert tuple(kept) == (208, 0) and raw == 208


def test_the_processed_file_is_byte_identical_to_the_old_shape(loaded, tmp_path):
    p, run, _, _, upload = loaded
    expected = _expected_lines(p, run["run_id"])
    # As the run wrote it (appended as its pages committed) and uploaded it.
    assert (p.data_dir / run["processed_file"]).read_bytes() == expected
    assert (upload / run["processed_file"]).read_bytes() == expected
    # As the saver writes it again from the tables (a restart, encryption): through the view processed_records.
    with closing(connect_writer(p.db_path)) as conn:
        row = conn.execute("SELECT * FROM etl_runs WHERE run_id=?", (run["run_id"],)).fetchone()
        written = write_run_files(conn, row, tmp_path)
    assert written["processed"]["path"].read_bytes() == expected


@pytest.mark.parametrize("query", QUERIES)
def test_data_processed_users_answers_the_old_bytes(loaded, query):
    _, run, new, old, _ = loaded
    url = f"/data/processed_users?run_id={run['run_id']}&{query}"
    got, before = new.get(url), old.get(url)
    assert got.status_code == before.status_code == 200
    assert got.content == before.content
    items = got.json()["items"]
    assert items and all(item["record"]["department_code"] == item["department_code"] for item in items)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_exports_answer_the_old_bytes(loaded, fmt):
    _, run, new, old, _ = loaded
    url = f"/data/processed_users.{fmt}?run_id={run['run_id']}"
    got, before = new.get(url), old.get(url)
    assert got.status_code == before.status_code == 200 and got.content == before.content
