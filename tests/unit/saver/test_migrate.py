"""Schema migrations on real SQLite files: applied once, in order, each all or nothing, recorded."""

import sqlite3

import pytest

from etl_common.db import connect_writer
from saver import migrate

SHIPPED = sorted(p.name for p in migrate.MIGRATIONS.glob("*.sql"))


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty migrations folder the saver's migrator reads instead of the shipped one."""
    path = tmp_path / "migrations"
    path.mkdir()
    monkeypatch.setattr(migrate, "MIGRATIONS", path)
    return path


def test_a_new_database_gets_every_shipped_migration_once_in_order(tmp_path):
    conn = connect_writer(tmp_path / "data.db")
    assert SHIPPED[0].startswith("0001_") and len(SHIPPED) >= 2
    assert migrate.migrate(conn) == SHIPPED
    recorded = conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    assert [(r[0], r[1]) for r in recorded] == [(int(n.split("_")[0]), n) for n in SHIPPED]
    assert all(r[2] for r in recorded)
    assert {"etl_runs", "raw_users", "processed_users", "invalid_users", "loaded_pages"} <= _tables(conn)
    assert migrate.migrate(conn) == []  # a restart applies nothing
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(SHIPPED)


def test_only_the_missing_migrations_are_applied(tmp_path, folder):
    (folder / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);\n")
    conn = connect_writer(tmp_path / "data.db")
    assert migrate.migrate(conn) == ["0001_one.sql"]
    (folder / "0002_two.sql").write_text("-- a second table\nCREATE TABLE two (y TEXT);\nINSERT INTO one VALUES (1);\n")
    assert migrate.migrate(conn) == ["0002_two.sql"]
    assert {"one", "two"} <= _tables(conn) and [tuple(r) for r in conn.execute("SELECT x FROM one")] == [(1,)]


def test_a_lower_number_that_arrives_later_is_still_applied(tmp_path, folder):
    """Branches number migrations on their own: 0004 may be applied before 0003 lands; both end up applied."""
    (folder / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);\n")
    (folder / "0004_four.sql").write_text("ALTER TABLE one ADD COLUMN four TEXT;\n")
    conn = connect_writer(tmp_path / "data.db")
    assert migrate.migrate(conn) == ["0001_one.sql", "0004_four.sql"]
    (folder / "0003_three.sql").write_text("ALTER TABLE one ADD COLUMN three TEXT;\n")
    assert migrate.migrate(conn) == ["0003_three.sql"]
    assert {r[1] for r in conn.execute("PRAGMA table_info(one)")} == {"x", "three", "four"}


def test_a_failing_migration_leaves_nothing_behind_and_is_retried(tmp_path, folder):
    (folder / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);\n")
    (folder / "0002_bad.sql").write_text("CREATE TABLE two (y TEXT);\nINSERT INTO missing VALUES (1);\n")
    conn = connect_writer(tmp_path / "data.db")
    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        migrate.migrate(conn)
    # 0001 committed on its own; 0002 rolled back as a whole and not recorded.
    assert "one" in _tables(conn) and "two" not in _tables(conn)
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]
    assert not conn.in_transaction
    (folder / "0002_bad.sql").write_text("CREATE TABLE two (y TEXT);\n")
    assert migrate.migrate(conn) == ["0002_bad.sql"]


def test_statements_are_split_where_sqlite_says_they_end():
    script = (
        "-- comment; with a semicolon\n"
        "CREATE TABLE t (a TEXT);\n"
        "INSERT INTO t VALUES ('x;y');\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
        "  UPDATE t SET a = a || ';';\n"
        "END;\n"
    )
    got = migrate._statements(script)
    assert got == [
        "CREATE TABLE t (a TEXT);",
        "INSERT INTO t VALUES ('x;y');",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET a = a || ';';\nEND;",
    ]


def test_a_new_database_gets_large_pages_and_an_existing_one_keeps_its_own(tmp_path):
    """Page size is chosen when the file is made, before WAL mode fixes it (etl_common.db.SQLITE_PAGE_SIZE)."""
    from etl_common.db import SQLITE_PAGE_SIZE
    from saver.store import WAL_CHECKPOINT_BYTES, Store

    new = Store(str(tmp_path / "new.db"))
    assert new.conn.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_SIZE > 4096
    assert new.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, as before
    assert new.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CHECKPOINT_BYTES // SQLITE_PAGE_SIZE
    new.close()
    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("CREATE TABLE kept (x)")  # a database made with SQLite's default pages
    old.close()
    store = Store(str(tmp_path / "old.db"))
    assert store.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CHECKPOINT_BYTES // 4096
    store.close()
