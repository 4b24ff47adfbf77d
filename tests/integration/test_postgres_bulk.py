"""Bulk loading on PostgreSQL (COPY into a staging table, then INSERT ... SELECT): the same rows as SQLite's."""

import sqlite3

import pytest

from dummyjson.users import make_user
from etl_common.db import parse_url
from saver import files
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN = {"run_id": "20261204_010203_copy00", "run_ts": "20261204_010203"}
# What COPY's text format must escape or would misread, and what PostgreSQL stores differently if mishandled.
HOSTILE = [
    'O\'Brien "the" quote',
    "back\\slash \\N \\\\ \\t",
    "tab\there",
    "new\nline and carriage\rreturn",
    "\\.",
    "line\n\\.\nafter the end of copy",
    "José Ünïcödé 名前 🙂",
    "x" * 200_000,
    "",
    "\\N",
    "NULL",
    ",;|",
]
TABLES = {
    "raw_users": "run_id, page, position, user_id, first_name, last_name, email, username, age, gender, department, "
    "inserted_at, record",
    "processed_users": "run_id, page, position, user_id, first_name, last_name, email, username, age, gender, "
    "department, department_code, title, role, city, state, user_agent, inserted_at, record",
    "invalid_users": "run_id, page, position, user_id, first_name, last_name, email, username, age, gender, "
    "department, error_reason, failed_rules, raw_line, inserted_at, record",
}


def _hostile_pages() -> list[dict]:
    """Two pages whose users carry the hostile texts in every text column, some fields missing (NULL columns)."""
    users = []
    for i, text in enumerate(HOSTILE):
        user = make_user(i + 1)
        user.update(firstName=text, lastName=text[::-1], userAgent=text, role=text)
        user["company"]["title"] = text
        user["address"]["city"] = text
        if i % 3 == 0:
            for key in ("email", "gender", "username"):
                user.pop(key, None)
        if i % 4 == 1:
            user["age"] = 3  # invalid: below 18, with its raw line
        users.append(user)
    users.append("a bare string\t\\.\n")  # invalid: not an object
    half = len(users) // 2
    departments = load_departments()
    return [
        {**RUN, "page": page, **transform_page(chunk, departments)}
        for page, chunk in enumerate((users[:half], users[half:]))
    ]


def _counts(pages: list[dict]) -> tuple[int, int]:
    return sum(len(p["valid"]) for p in pages), sum(len(p["invalid"]) for p in pages)


def _rows(store: Store) -> dict[str, list[tuple]]:
    """Every table's rows in insertion order (id), without id; ``inserted_at`` only as present or not."""
    got = {}
    for table, columns in TABLES.items():
        rows = store.conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
        names = [c.strip() for c in columns.split(",")]
        at = names.index("inserted_at")
        got[table] = [tuple(v if i != at else v is not None for i, v in enumerate(r)) for r in rows]
    return got


@pytest.fixture
def stores(tmp_path, postgres_server):
    lite = Store(str(tmp_path / "data.db"))
    pg = Store(parse_url(postgres_server.create_database()))
    yield lite, pg
    lite.close()
    pg.close()


def _staged_tables(store: Store) -> int:
    return store.conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'etl_stage_%' AND relnamespace = pg_my_temp_schema()"
    ).fetchone()[0]


def test_hostile_values_load_through_copy_as_sqlite_loads_them(stores):
    lite, pg = stores
    pages = _hostile_pages()
    assert lite.load_pages(pages) == pg.load_pages(pages) == [(RUN["run_id"], 0), (RUN["run_id"], 1)]
    assert _staged_tables(pg) == 3  # the rows went through COPY, one staging table per user table
    expected, got = _rows(lite), _rows(pg)
    assert [len(expected[t]) for t in TABLES] == [len(HOSTILE) + 1, *_counts(pages)]
    for table in TABLES:
        assert got[table] == expected[table], table
    names = {r[0] for r in pg.conn.execute("SELECT first_name FROM raw_users")}
    assert set(HOSTILE) <= names and None in names  # the bare string has no first name: NULL, not '\N' or ''
    assert {r[0] for r in pg.conn.execute("SELECT title FROM processed_users")} & set(HOSTILE)
    run = pg.run(RUN["run_id"])
    assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (len(HOSTILE) + 1, *_counts(pages))


def test_a_redelivered_batch_inserts_nothing_and_a_mixed_one_only_its_new_page(stores):
    for store in stores:
        first, second = _hostile_pages()
        assert store.load_pages([first]) == [(RUN["run_id"], 0)]
        before = _rows(store)
        assert store.load_pages([first]) == []
        assert store.load_pages([first, first]) == []
        assert _rows(store) == before
        assert store.load_pages([second, first, second]) == [(RUN["run_id"], 1)]
        run = store.run(RUN["run_id"])
        assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (
            len(HOSTILE) + 1,
            *_counts([first, second]),
        )
    assert _rows(stores[0]) == _rows(stores[1])


def _insert(store: Store, rows: list[tuple]) -> int:
    return store.conn.executemany(
        "INSERT INTO loaded_pages (run_id, page, raw_count, valid_count, invalid_count, loaded_at) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        rows,
    ).rowcount


def test_executemany_counts_the_rows_it_inserted_as_sqlite_does(stores):
    run_id = RUN["run_id"]
    counts = []
    for store in stores:
        with store.transaction():
            store._ensure_run(run_id, RUN["run_ts"])
            first = _insert(store, [(run_id, p, 0, 0, 0, "x") for p in (0, 1, 1, 2)])
            again = _insert(store, [(run_id, p, 0, 0, 0, "x") for p in (2, 3)])
            # A statement that reads the table sees the rows of this transaction.
            seen = store.conn.execute("SELECT count(*) FROM loaded_pages").fetchone()[0]
        with store.transaction():
            none = _insert(store, [(run_id, p, 0, 0, 0, "x") for p in (0, 1, 2, 3)])
        counts.append((first, again, seen, none))
    assert counts[1] == counts[0] == (3, 1, 4, 0)
    assert _staged_tables(stores[1]) == 1


def test_a_bad_row_fails_the_batch_as_an_integrity_error_and_the_next_batch_loads(stores):
    lite, pg = stores
    good, other = _hostile_pages()
    for store in (lite, pg):
        assert store.load_pages([good]) == [(RUN["run_id"], 0)]
        with pytest.raises(sqlite3.IntegrityError):
            with store.transaction():
                store.conn.executemany(
                    "INSERT INTO raw_users (run_id, page, position, inserted_at, record) VALUES (?,?,?,?,?) "
                    "ON CONFLICT DO NOTHING",
                    [(RUN["run_id"], 1, 0, "x", "{}"), (RUN["run_id"], 1, 1, "x", None)],
                )
        assert not store.conn.in_transaction
        assert store.load_pages([other]) == [(RUN["run_id"], 1)]  # the staging table is there again
    assert _rows(lite) == _rows(pg)


def test_rows_refused_at_commit_end_the_transaction(stores):
    for store in stores:
        with store.transaction():
            store._ensure_run(RUN["run_id"], RUN["run_ts"])
        store.conn.execute("BEGIN IMMEDIATE")  # as saver.schema writes: the error may come at COMMIT on PostgreSQL
        with pytest.raises(sqlite3.IntegrityError):
            try:
                store.conn.executemany(  # its rowcount unread: the rows wait for the COMMIT on PostgreSQL
                    "INSERT INTO loaded_pages (run_id, page, raw_count, valid_count, invalid_count, loaded_at) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    [(RUN["run_id"], 0, 0, 0, 0, "x"), (RUN["run_id"], 1, 0, 0, 0, None)],
                )
            except sqlite3.Error:
                store.conn.execute("ROLLBACK")
                raise
            store.conn.execute("COMMIT")
        assert not store.conn.in_transaction
        with store.transaction():
            assert _insert(store, [(RUN["run_id"], 0, 0, 0, 0, "x")]) == 1


def test_run_files_stream_the_rows_a_few_at_a_time_and_equal_sqlites(stores, tmp_path):
    lite, pg = stores
    pages = _hostile_pages()
    for store in stores:
        store.load_pages(pages)
    pg.conn.fetch_rows = 2  # fewer than any table's rows of the run: several fetches each
    lines = files._lines(pg.conn, "raw", files._QUERIES["raw"][1], RUN["run_id"], [0])
    next(lines)
    # The rest of the result waits on the server, in a cursor of this session, not in the saver's memory: one
    # FETCH of 2 rows so far, the others still to be fetched.
    (name,) = [r[0] for r in pg.conn.execute("SELECT name FROM pg_cursors WHERE name LIKE 'etl_stream_%'")]
    assert len(pg.conn.execute(f"FETCH ALL FROM {name}").fetchall()) == len(HOSTILE) + 1 - 2
    lines.close()
    assert not pg.conn.in_transaction  # a stream left unread ends its transaction
    lines = files._lines(pg.conn, "raw", files._QUERIES["raw"][1], RUN["run_id"], [0])
    first = next(lines)
    assert [first, *lines] == [
        r[0].encode() + b"\n" for r in lite.conn.execute(files._QUERIES["raw"][1], (RUN["run_id"],))
    ]
    assert not pg.conn.in_transaction  # the stream's own transaction ended with it
    written = {}
    for name, store in (("sqlite", lite), ("postgresql", pg)):
        out = files.write_run_files(store.conn, store.run(RUN["run_id"]), tmp_path / name)
        written[name] = {kind: (f["path"].read_bytes(), f["records"]) for kind, f in out.items()}
    assert written["postgresql"] == written["sqlite"]
    assert [n for _, n in written["sqlite"].values()] == [len(HOSTILE) + 1, *_counts(pages)]
