"""The migrations of both engines on real databases (a SQLite file, a private PostgreSQL): one numbering, the same
tables, columns, keys and CHECKs; the roles' grants of the API's reader and of the SQL console."""

import os
import sqlite3
import subprocess
from contextlib import closing

import httpx
import orjson
import psycopg
import pytest

import testbed as tb
import testbed.postgres as tbpg
from api.sqlconsole import ALLOWED
from etl_common.db import connect_writer, parse_url
from saver import migrate


def _sqlite_columns(conn: sqlite3.Connection) -> dict[str, dict[str, bool]]:
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    # pk > 0 or notnull: SQLite's INTEGER PRIMARY KEY is NOT NULL without saying so.
    return {t: {r[1]: bool(r[3] or r[5]) for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}


def _postgresql_columns(conn: psycopg.Connection) -> dict[str, dict[str, bool]]:
    rows = conn.execute(
        "SELECT c.table_name, c.column_name, c.is_nullable = 'NO' FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"  # views are compared apart
    ).fetchall()
    found: dict[str, dict[str, bool]] = {}
    for table, column, not_null in rows:
        found.setdefault(table, {})[column] = not_null
    return found


def _indexes_sqlite(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def _indexes_postgresql(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT i.indexname FROM pg_indexes i WHERE i.schemaname = current_schema() AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"  # keys' own indexes are named differently
    ).fetchall()
    return {r[0] for r in rows}


def test_both_engines_number_their_migrations_alike():
    sqlite_set = [p.name.split("_", 1)[0] for p in migrate.scripts("sqlite")]
    postgresql_set = [p.name.split("_", 1)[0] for p in migrate.scripts("postgresql")]
    assert sqlite_set == postgresql_set, "every migration needs its PostgreSQL twin under migrations/postgresql/"
    assert [p.name for p in migrate.scripts("sqlite")] == [p.name for p in migrate.scripts("postgresql")]


def test_both_engines_make_the_same_tables_columns_and_indexes(tmp_path, postgres_server):
    lite = connect_writer(tmp_path / "data.db")
    applied = migrate.migrate(lite)
    with connect_writer(parse_url(postgres_server.create_database())) as pg:
        assert migrate.migrate(pg) == applied  # type: ignore[arg-type]
        assert migrate.migrate(pg) == []  # type: ignore[arg-type]  # a restart applies nothing
        assert _postgresql_columns(pg) == _sqlite_columns(lite)  # type: ignore[arg-type]
        assert _indexes_postgresql(pg) == _indexes_sqlite(lite)  # type: ignore[arg-type]
        views = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name")]
        pg_views = [
            r[0] for r in pg.execute("SELECT viewname FROM pg_views WHERE schemaname = current_schema() ORDER BY 1")
        ]
        assert pg_views == views
        for view in views:
            assert [d.name for d in pg.execute(f"SELECT * FROM {view} LIMIT 0").description] == [
                d[0] for d in lite.execute(f"SELECT * FROM {view} LIMIT 0").description
            ]
        versions = [r[0] for r in pg.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [r[0] for r in lite.execute("SELECT version FROM schema_migrations ORDER BY version")]
    lite.close()


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        ("INSERT INTO etl_runs (run_id, run_timestamp, status) VALUES ('r2', 't', 'done')", "check"),
        ("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't')", "unique"),
        ("INSERT INTO loaded_pages VALUES ('nope', 0, 1, 1, 0, 't')", "foreign key"),
        (
            "INSERT INTO uploaded_files (run_id, kind, name, bytes, sha256, records, written_at) "
            "VALUES ('r1', 'zip', 'n', 1, 's', 1, 't')",
            "check",
        ),
        ("INSERT INTO raw_users (run_id, page, position, inserted_at) VALUES ('r1', 0, 0, 't')", "not null"),
    ],
)
def test_both_engines_refuse_the_same_bad_rows(tmp_path, postgres_url, statement, why):
    lite = connect_writer(tmp_path / "data.db")
    migrate.migrate(lite)
    lite.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't')")
    with pytest.raises(sqlite3.IntegrityError):
        lite.execute(statement)
    lite.close()
    with connect_writer(parse_url(postgres_url)) as pg:
        migrate.migrate(pg)  # type: ignore[arg-type]
        pg.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't') ON CONFLICT DO NOTHING")
        with pytest.raises(psycopg.errors.IntegrityError):
            pg.execute(statement)


def test_the_console_grant_is_the_console_allow_list():
    """The grant script and the SQLite guard's allow-list name the same columns of the same tables."""
    text = (migrate.MIGRATIONS / "postgresql" / "grants" / "console.sql").read_text()
    granted: dict[str, frozenset[str]] = {}
    for part in text.split("GRANT SELECT (")[1:]:
        columns, rest = part.split(")", 1)
        table = rest.split("ON", 1)[1].split()[0]
        granted[table] = frozenset(c.strip() for c in columns.split(","))
    assert granted == ALLOWED


def test_roles_get_their_grants_and_nothing_more(postgres_server):
    admin_url = postgres_server.create_database()
    with psycopg.connect(postgres_server.url(), autocommit=True) as su:
        for role in ("etl_reader", "etl_console"):
            su.execute(f"DROP ROLE IF EXISTS {role}")  # another test of the session may have made it elsewhere
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("CREATE ROLE etl_reader LOGIN PASSWORD 'r'")
        admin.execute("CREATE ROLE etl_console LOGIN PASSWORD 'c'")
        with pytest.raises(ValueError, match="does not exist; create it first"):
            migrate.migrate(admin, console_role="etl_nobody")
        migrate.migrate(admin, reader_role="etl_reader", console_role="etl_console")
        admin.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't')")
    database = admin_url.rsplit("/", 1)[1]
    with closing(psycopg.connect(postgres_server.url(database, "etl_reader", "r"), autocommit=True)) as reader:
        assert reader.execute("SELECT run_id FROM etl_runs").fetchall() == [("r1",)]
        assert reader.execute("SELECT count(record) FROM raw_users").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r2', 't')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("BEGIN READ WRITE; DELETE FROM etl_runs")
    with closing(psycopg.connect(postgres_server.url(database, "etl_console", "c"), autocommit=True)) as console:
        assert console.execute("SELECT run_id, status FROM etl_runs").fetchall() == [("r1", "running")]
        for query in (
            "SELECT record FROM raw_users",
            "SELECT raw_line FROM invalid_users",
            "SELECT * FROM processed_users",
            "SELECT count(*) FROM loaded_pages",
            "SELECT report FROM run_quality",
            "SELECT set_config('statement_timeout', '0', false)",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_ls_dir('.')",
            "SELECT lo_import('/etc/passwd')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                console.execute(query)
        assert console.execute("SHOW statement_timeout").fetchone() == ("1min",)
        assert console.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


def test_the_saver_command_migrates_postgresql_and_grants_the_roles(tmp_path, postgres_server):
    """``python -m saver migrate`` with ETL_DATABASE_URL on PostgreSQL (a real process); serving says it cannot yet."""
    url = postgres_server.create_database()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS etl_cli_console")
        admin.execute("CREATE ROLE etl_cli_console LOGIN PASSWORD 'c'")
    env = {
        "PATH": os.environ["PATH"],
        "ETL_DATABASE_URL": url,
        "ETL_DATABASE_CONSOLE_ROLE": "etl_cli_console",
        "ETL_DB_PATH": str(tmp_path / "unused.db"),
    }
    done = subprocess.run([tb.PYTHON, "-m", "saver", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "applied 0001_init.sql" in done.stderr and postgres_server.password not in done.stderr
    again = subprocess.run([tb.PYTHON, "-m", "saver", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing (up to date)" in again.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(migrate.scripts("postgresql")),
        )
        assert conn.execute(
            "SELECT has_column_privilege('etl_cli_console', 'raw_users', 'record', 'SELECT')"
        ).fetchone() == (False,)
    # SQLite's vacuum has no meaning on PostgreSQL (autovacuum): refused with the reason, no SQLite file made.
    vacuum = subprocess.run([tb.PYTHON, "-m", "saver", "vacuum"], env=env, capture_output=True, text=True, timeout=60)
    assert vacuum.returncode == 2 and "autovacuum" in vacuum.stderr and postgres_server.password not in vacuum.stderr
    assert not (tmp_path / "unused.db").exists()


def test_a_bad_database_url_stops_the_saver_with_one_clear_line(tmp_path):
    env = {"PATH": os.environ["PATH"], "ETL_DATABASE_URL": "mysql://u:secret@h/db"}
    done = subprocess.run([tb.PYTHON, "-m", "saver", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "names no engine" in done.stderr and "secret" not in done.stderr


def test_the_console_refuses_a_role_that_reads_or_can_do_more(postgres_server):
    """The API's check before each console query: the reader's role, a superuser, or a role that may still call
    set_config() (no console grant applied in that database) turn the console off, saying what to fix."""
    from api.pgconsole import ConsoleUnsafe, run_query
    from api.sqlconsole import QueryRefused

    url = postgres_server.create_database()
    reader, console = tbpg.make_roles(postgres_server, url)
    assert run_query(parse_url(console), "SELECT count(*) FROM etl_runs", 10, 1000, 10_000).rows == [[0]]
    for login, says in ((reader, "reads invalid_users.raw_line, invalid_users.record"), (url, "is a superuser")):
        with pytest.raises(ConsoleUnsafe, match=says):
            run_query(parse_url(login), "SELECT 1", 10, 1000, 10_000)
    # A database where only the columns were granted, by hand: set_config() is still everyone's.
    other = postgres_server.create_database()
    database = other.rsplit("/", 1)[1]
    with connect_writer(parse_url(other)) as conn:
        migrate.migrate(conn)  # type: ignore[arg-type]
        conn.execute("DROP ROLE IF EXISTS etl_by_hand")
        conn.execute("CREATE ROLE etl_by_hand LOGIN PASSWORD 'h'")
        conn.execute("GRANT SELECT (run_id) ON etl_runs TO etl_by_hand")
    by_hand = parse_url(postgres_server.url(database, "etl_by_hand", "h"))
    with pytest.raises(ConsoleUnsafe, match=r"may call set_config\(\)"):
        run_query(by_hand, "SELECT run_id FROM etl_runs", 10, 1000, 10_000)
    with pytest.raises(QueryRefused, match="time limit"):  # the check itself runs under the time limit
        run_query(parse_url(console), "SELECT pg_sleep(5)", 10, 200, 10_000)


def _migrate(env_url: str, cwd) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "ETL_DATABASE_URL": env_url}
    return subprocess.run(
        [tb.PYTHON, "-m", "saver", "migrate"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        # A port nothing listens on (port 1 on loopback: refused at once).
        ("postgresql://etl:s3cr3t-pw@127.0.0.1:1/etl", "127.0.0.1"),
        # A host name that cannot resolve (.invalid is reserved for that).
        ("postgresql://etl:s3cr3t-pw@db.invalid:5432/etl", "db.invalid"),
        # A password whose percent-encoding is broken: the URL is malformed, and the password must not be echoed.
        ("postgresql://etl:s3cr3t-pw%zz@127.0.0.1:1/etl", "malformed"),
    ],
)
def test_an_unreachable_or_malformed_postgresql_url_stops_migrate_with_one_clear_line(tmp_path, url, cause):
    done = _migrate(url, tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "s3cr3t-pw" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and cause in lines[0], done.stderr


def test_a_wrong_password_stops_migrate_with_one_clear_line(tmp_path, postgres_server):
    url = postgres_server.url(password="wr0ng-s3cr3t")
    done = _migrate(url, tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "wr0ng-s3cr3t" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "password" in lines[0], done.stderr


def test_a_sqlite_database_url_is_the_file_migrate_prepares(tmp_path):
    """``ETL_DATABASE_URL=sqlite:///...`` names the SQLite file (docs/scaling.md): the saver must use it, not the
    default ETL_DB_PATH, or the saver and the API (which follows the URL) work on two different files."""
    chosen = tmp_path / "chosen" / "etl.db"
    chosen.parent.mkdir()
    done = _migrate(f"sqlite:///{chosen}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert chosen.exists(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with closing(sqlite3.connect(chosen)) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrate.scripts("sqlite"))
    assert not (tmp_path / "database").exists()


def _api_answers(tmp_path, settings: dict[str, str], ask) -> tuple[list[httpx.Response], str]:
    """The API as a real process with ``settings`` (auth off): ``ask(client)``'s answers, and the API's log."""
    port = tb.free_port()
    env = {"PATH": os.environ["PATH"], "ETL_API_AUTH": "none", "ETL_API_PORT": str(port), **settings}
    api = tb.spawn("api", [tb.PYTHON, "-m", "api"], tmp_path, env=env, cwd=tmp_path)
    try:
        tb.wait_port(port, proc=api.popen)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = ask(client)
    finally:
        api.stop()
    return answers, api.output()


@pytest.mark.parametrize(
    ("password", "cause"),
    [("wr0ng-s3cr3t", "password"), (None, "refused")],
)
def test_the_api_names_why_it_cannot_read_postgresql(tmp_path, postgres_server, password, cause):
    """A wrong password (or nothing listening) is a setting to fix, not a database "not ready yet": the API's
    answer or its log names the cause (and never the password), so the operator knows the next step."""
    url = postgres_server.url(password=password) if password else "postgresql://etl:s3cr3t-pw@127.0.0.1:1/etl"
    answers, log = _api_answers(
        tmp_path,
        {"ETL_API_DATABASE_URL": url},
        lambda client: [client.get(route) for route in ("/readyz", "/etl_runs", "/data/processed_users")],
    )
    assert [a.status_code for a in answers] == [503, 503, 503]
    said = " ".join(a.text for a in answers) + log
    assert "s3cr3t" not in said
    assert cause in said.lower(), said


def test_the_console_names_a_refused_login_instead_of_try_again(tmp_path, postgres_server):
    """The console's role with a wrong password: the answer must say the login was refused (fix
    ETL_API_SQL_DATABASE_URL), not "cannot be reached; try again", and never the password."""
    url = postgres_server.create_database()
    reader, console = tbpg.make_roles(postgres_server, url)
    wrong = console.replace(console.split("@")[0].rsplit(":", 1)[1], "wr0ng-s3cr3t", 1)
    (runs, answer), log = _api_answers(
        tmp_path,
        {"ETL_API_DATABASE_URL": reader, "ETL_API_SQL_DATABASE_URL": wrong},
        lambda client: [client.get("/etl_runs"), client.post("/query_sql", json={"query": "SELECT 1"})],
    )
    assert runs.status_code == 200
    assert answer.status_code == 503
    said = answer.text + log
    assert "s3cr3t" not in said, said
    assert "password" in said.lower(), said


@pytest.mark.parametrize("parameter", ["password", "sslpassword"])
def test_a_password_given_as_a_url_parameter_stays_hidden(tmp_path, postgres_server, parameter):
    """libpq takes the password (and the key's sslpassword) as URL parameters too: ``?password=...``. The saver's
    line naming the database it migrated, and the bad-setting line, must hide it as they hide ``user:password@``."""
    url = postgres_server.create_database()
    database = url.rsplit("/", 1)[1]
    secret = postgres_server.password
    as_parameter = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{database}?{parameter}={secret}"
    if parameter == "sslpassword":  # the login's password in its usual place, the key's one in a parameter
        as_parameter = f"{url}?sslpassword=k3y-s3cr3t"
        secret = "k3y-s3cr3t"
    done = _migrate(as_parameter, tmp_path)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stderr + done.stdout, done.stderr
    bad = _migrate(as_parameter.replace("postgresql://", "mysql://"), tmp_path)
    assert bad.returncode == 2 and secret not in bad.stderr + bad.stdout, bad.stderr


def test_postgresql_0008_keeps_old_runs_readable_as_sqlite_does(tmp_path, postgres_server, monkeypatch):
    """The PostgreSQL twin of migration 0008 on a database of 0007 with the rows the saver wrote then: every old
    processed record reads back byte for byte through processed_records, and only derivable copies are dropped."""
    import shutil

    from dummyjson.users import make_user
    from saver.userrows import _with_code

    folder = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS / "postgresql" / "grants", folder / "postgresql" / "grants")
    for path in migrate.scripts("postgresql"):
        if int(path.name.split("_", 1)[0]) <= 7:
            shutil.copy(path, folder / "postgresql")
    shipped = migrate.MIGRATIONS
    url = postgres_server.create_database()
    raw = [make_user(1), {}, make_user(3), make_user(4), make_user(5), {**make_user(6), "department_code": "SPOOF"}]
    processed = [
        (0, "ENG", _with_code(orjson.dumps(raw[0]), "ENG").decode()),
        (1, "HR", _with_code(b"{}", "HR").decode()),
        (2, 'A"B', _with_code(orjson.dumps(raw[2]), 'A"B').decode()),
        (3, "OPS", orjson.dumps({"department_code": "OPS", **raw[3]}).decode()),  # an older shape
        (4, None, _with_code(orjson.dumps(raw[4]), None).decode()),
        (5, "ÜNÏ✓", _with_code(orjson.dumps(raw[5]), "ÜNÏ✓").decode()),
        (9, "ENG", '{"id":9,"department_code":"ENG"}'),  # no raw row at this position
    ]
    with connect_writer(parse_url(url)) as conn:
        monkeypatch.setattr(migrate, "MIGRATIONS", folder)
        assert migrate.migrate(conn)[-1] == "0007_run_schema.sql"  # type: ignore[arg-type]
        monkeypatch.setattr(migrate, "MIGRATIONS", shipped)
        conn.execute(
            "INSERT INTO etl_runs (run_id, run_timestamp, raw_file, processed_file, dlq_file, status) VALUES "
            "('old', '2026-01-01T00:00:00.000Z', 'raw_users/etl_x.jsonl', 'processed_users/etl_x.jsonl', "
            "'dlq/etl_x.jsonl', 'succeeded')"
        )
        for pos, r in enumerate(raw):
            conn.execute(
                "INSERT INTO raw_users (run_id, page, position, user_id, inserted_at, record) "
                "VALUES ('old', 0, %s, %s, 't', %s)",
                (pos, r.get("id"), orjson.dumps(r).decode()),
            )
        for pos, code, record in processed:
            conn.execute(
                "INSERT INTO processed_users (run_id, page, position, user_id, department_code, inserted_at, record) "
                "VALUES ('old', 0, %s, %s, %s, 't', %s)",
                (pos, pos + 1, code, record),
            )
        assert migrate.migrate(conn) == ["0008_one_copy.sql"]  # type: ignore[arg-type]
        view = dict(conn.execute("SELECT position, record FROM processed_records").fetchall())
        kept = {r[0] for r in conn.execute("SELECT position FROM processed_users WHERE record IS NOT NULL")}
    assert view == {pos: record for pos, _, record in processed}
    assert kept == {2, 3, 9}


def test_a_malformed_console_url_is_named_without_its_password(tmp_path, postgres_server):
    """ETL_API_SQL_DATABASE_URL with a broken percent-encoding in its password passes the setting's check (only the
    scheme is checked): the console must answer that the URL is malformed, not a 500 whose log holds the password."""
    url = postgres_server.create_database()
    reader, _ = tbpg.make_roles(postgres_server, url)
    malformed = f"postgresql://etl_console:s3cr3t-pw%zz@127.0.0.1:{postgres_server.port}/x"
    (answer,), log = _api_answers(
        tmp_path,
        {"ETL_API_DATABASE_URL": reader, "ETL_API_SQL_DATABASE_URL": malformed},
        lambda client: [client.post("/query_sql", json={"query": "SELECT 1"})],
    )
    said = answer.text + log
    assert answer.status_code == 503, said
    assert "s3cr3t-pw" not in said and "Traceback" not in said, said
