"""One copy of each user per run (migration 0008) on real SQLite files: the raw record is the only JSON stored, the
view ``processed_records`` gives every processed record back byte for byte, and a database of 0007 migrates."""

import shutil

import orjson
import pytest

from dummyjson.users import make_user
from etl_common.db import connect_writer
from saver import loader, migrate
from saver.files import LoadingFiles, write_run_files
from saver.store import Store
from saver.userrows import _with_code
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN_TS = "20260101_000000"
# Codes the view spells (plain text, none) and codes it cannot (JSON escapes them, or not text): the latter keep
# their whole record on the processed row.
CODES = ["ENG", None, "É-ü", 'A"B', "line\nbreak", "back\\slash", 7, ["x"], "", "\x7f"]


def _page(run_id: str, page: int, codes: list, raw: list | None = None) -> dict:
    raw = raw if raw is not None else [make_user(page * 100 + i + 1) for i in range(len(codes))]
    valid = [{"pos": pos, "department_code": code} for pos, code in enumerate(codes)]
    return {"run_id": run_id, "run_ts": RUN_TS, "page": page, "raw": raw, "valid": valid, "invalid": []}


def test_only_the_raw_copy_is_stored_and_the_view_gives_the_processed_record_back(tmp_path):
    store = Store(str(tmp_path / "data.db"))
    page = _page("r1", 0, CODES, [make_user(1), {}, *[make_user(i) for i in range(3, len(CODES) + 1)]])
    store.load_pages([page])
    rows = store.conn.execute(
        "SELECT p.position, p.record AS kept, v.record FROM processed_users p JOIN processed_records v USING (id) "
        "ORDER BY p.position"
    ).fetchall()
    expected = [_with_code(orjson.dumps(r), code).decode() for r, code in zip(page["raw"], CODES, strict=True)]
    assert [r["record"] for r in rows] == expected  # byte for byte, the empty object included
    kept = {r["position"] for r in rows if r["kept"] is not None}
    assert kept == {3, 4, 5, 6, 7}  # quote, new line, backslash, a number, a list: JSON spells them otherwise
    assert all(r["kept"] == r["record"] for r in rows if r["kept"] is not None)
    assert expected[1] == '{"department_code":null}'


def test_a_run_file_written_from_the_tables_equals_the_one_appended_while_loading(tmp_path):
    store = Store(str(tmp_path / "data.db"))
    loading = LoadingFiles(tmp_path / "loading")
    records = [make_user(i) for i in range(1, 31)]
    pages = [
        {
            "run_id": "r1",
            "run_ts": RUN_TS,
            "page": n,
            **transform_page(records[n * 10 : n * 10 + 10], load_departments()),
        }
        for n in range(3)
    ]
    loader.load_pages(store, pages, loading)
    run = store.run("r1")
    assert run is not None
    written = write_run_files(store.conn, run, tmp_path / "files")
    appended = loading.path("r1", run["processed_file"])
    assert written["processed"]["path"].read_bytes() == appended.read_bytes()
    lines = written["processed"]["path"].read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {**r, "department_code": v["department_code"]} for p in pages for v in p["valid"] for r in [p["raw"][v["pos"]]]
    ]


@pytest.fixture
def at_0007(tmp_path, monkeypatch):
    """A database migrated to 0007 only, with rows as the saver wrote them then (every processed record whole)."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in sorted(migrate.MIGRATIONS.glob("*.sql")):
        if int(path.name.split("_", 1)[0]) <= 7:
            shutil.copy(path, folder)
    shipped = migrate.MIGRATIONS
    monkeypatch.setattr(migrate, "MIGRATIONS", folder)
    conn = connect_writer(tmp_path / "data.db")
    assert migrate.migrate(conn)[-1] == "0007_run_schema.sql"
    conn.execute(
        "INSERT INTO etl_runs (run_id, run_timestamp, raw_file, processed_file, dlq_file, status) VALUES "
        "('old', '2026-01-01T00:00:00.000Z', 'raw_users/etl_x.jsonl', 'processed_users/etl_x.jsonl', "
        "'dlq/etl_x.jsonl', 'succeeded')"
    )
    raw = [make_user(1), {}, make_user(3), make_user(4), make_user(5), make_user(6)]
    for pos, r in enumerate(raw):
        conn.execute(
            "INSERT INTO raw_users (run_id, page, position, user_id, inserted_at, record) VALUES ('old',0,?,?,'t',?)",
            (pos, r.get("id"), orjson.dumps(r).decode()),
        )
    processed = [
        (0, "ENG", _with_code(orjson.dumps(raw[0]), "ENG").decode()),
        (1, "HR", _with_code(b"{}", "HR").decode()),
        (2, 'A"B', _with_code(orjson.dumps(raw[2]), 'A"B').decode()),
        # An older shape: the code first. Kept as it is, read as before.
        (3, "OPS", orjson.dumps({"department_code": "OPS", **raw[3]}).decode()),
        (4, None, _with_code(orjson.dumps(raw[4]), None).decode()),
        (9, "ENG", '{"id":9,"department_code":"ENG"}'),  # no raw row at this position
    ]
    for pos, code, record in processed:
        conn.execute(
            "INSERT INTO processed_users (run_id, page, position, user_id, department_code, inserted_at, record) "
            "VALUES ('old', 0, ?, ?, ?, 't', ?)",
            (pos, pos + 1, code, record),
        )
    monkeypatch.setattr(migrate, "MIGRATIONS", shipped)
    return conn, {pos: record for pos, _, record in processed}


def test_0008_keeps_old_runs_readable_and_drops_only_the_copies_it_can_derive(at_0007, tmp_path):
    conn, before = at_0007
    columns = [r[1] for r in conn.execute("PRAGMA table_info(processed_users)")]
    typed = conn.execute(f"SELECT {', '.join(columns[:-1])} FROM processed_users ORDER BY id").fetchall()
    assert migrate.migrate(conn) == ["0008_one_copy.sql"]
    assert [r[1] for r in conn.execute("PRAGMA table_info(processed_users)")] == columns
    assert conn.execute(f"SELECT {', '.join(columns[:-1])} FROM processed_users ORDER BY id").fetchall() == typed
    view = {r[0]: r[1] for r in conn.execute("SELECT position, record FROM processed_records")}
    assert view == before  # every old row reads as it did, byte for byte
    kept = {r[0] for r in conn.execute("SELECT position FROM processed_users WHERE record IS NOT NULL")}
    assert kept == {2, 3, 9}  # an escaped code, an older shape, a row without its raw row
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name='processed_users'")}
    assert "processed_users_summary" in indexes
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    store = Store(str(tmp_path / "data.db"))  # the saver opens it and loads a new run beside the old one
    store.load_pages([_page("new", 0, ["ENG", "OPS"])])
    run = store.run("old")
    assert run is not None
    file = write_run_files(store.conn, run, tmp_path / "files")["processed"]["path"].read_bytes()
    assert file == b"".join(before[pos].encode() + b"\n" for pos in sorted(before))
    new = store.conn.execute("SELECT record FROM processed_records WHERE run_id='new' ORDER BY position").fetchall()
    assert [orjson.loads(r[0])["department_code"] for r in new] == ["ENG", "OPS"]
