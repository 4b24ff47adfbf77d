"""ETL_DATABASE_URL: which engine a URL names, and the placeholders of each engine's dialect."""

from pathlib import Path

import pytest

from etl_common.db import POSTGRESQL, SQLITE, BadDatabaseUrl, parse_url, qmark_to_format


@pytest.mark.parametrize(
    ("url", "engine", "path"),
    [
        ("", "sqlite", Path("default/data.db")),
        (None, "sqlite", Path("default/data.db")),
        ("sqlite:///database/data.db", "sqlite", Path("database/data.db")),
        ("sqlite:////var/lib/etl/data.db", "sqlite", Path("/var/lib/etl/data.db")),
        ("postgresql://etl:secret@db:5432/etl", "postgresql", None),
        ("postgres://etl@db/etl?sslmode=require", "postgresql", None),
        ("postgresql+psycopg://etl:pw@db/etl", "postgresql", None),
    ],
)
def test_the_url_names_the_engine(url, engine, path):
    parsed = parse_url(url, "default/data.db")
    assert parsed.engine == engine and parsed.path == path
    assert parsed.dialect is (SQLITE if engine == "sqlite" else POSTGRESQL)
    if engine == "postgresql":
        assert parsed.url.startswith("postgresql://")  # the scheme libpq takes


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u:p@h/db", "names no engine"),
        ("db.sqlite", "names no engine"),
        ("sqlite://relative.db", "sqlite:///relative"),
        ("postgresql://u:p@h:5432", "names no database"),
        ("postgresql://u:p@h:port/db", "malformed"),
        ("postgresql://u:p@h%zz@h:5432/db", "malformed"),  # a '%' that starts no escape: libpq would echo it
        ("postgresql://u:p@h%4@h:5432/db", "malformed"),
        ("postgresql://u:p@h%@h:5432/db", "malformed"),
        ("postgresql://u@h:5432/db?password=p@h%g0", "malformed"),
        ("postgresql://u:p@h/x@h:5432/db", "malformed"),  # an unencoded '/' moves the port into the password
    ],
)
def test_a_bad_url_says_what_to_write(url, says):
    with pytest.raises(BadDatabaseUrl, match=says) as raised:
        parse_url(url)
    assert "p@h" not in str(raised.value)  # no password in the message


def test_the_password_is_redacted():
    assert parse_url("postgresql://etl:s3cret@db:5432/etl").redacted() == "postgresql://etl:***@db:5432/etl"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://etl@db/etl?password=s3cret", "postgresql://etl@db/etl?password=***"),
        (
            "postgresql://etl@db/etl?sslmode=require&PassWord=s3cret",
            "postgresql://etl@db/etl?sslmode=require&PassWord=***",
        ),
        ("postgresql://etl:s3cret@db/etl?sslpassword=s3cret&x=1", "postgresql://etl:***@db/etl?sslpassword=***&x=1"),
    ],
)
def test_a_password_given_as_a_parameter_is_redacted(url, redacted):
    from etl_common.settings import redact_url

    assert parse_url(url).redacted() == redacted
    assert "s3cret" not in redact_url(url)


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ('connection to server at "h", port 5 failed: FATAL:  password authentication failed for user "u"', "login"),
        ('connection to server at "h", port 5 failed: Connection refused\n\tIs the server running', "refused"),
        ("failed to resolve host 'h': [Errno -2] Name or service not known", "cannot be resolved"),
        ("something new that quotes s3cr%40t and s3cr@t", "cannot use PostgreSQL"),
    ],
)
def test_a_connection_problem_names_its_cause_without_the_password(message, says):
    from etl_common.db import connection_problem

    line = connection_problem(OSError(message), parse_url("postgresql://u:s3cr%40t@h:5/db?sslpassword=k3y"))
    assert says in line and "s3cr" not in line and "\n" not in line


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT a FROM t WHERE b = ? AND c LIKE ?", "SELECT a FROM t WHERE b = %s AND c LIKE %s"),
        ("SELECT '?', \"?\" FROM t WHERE x = ?", "SELECT '?', \"?\" FROM t WHERE x = %s"),
        ("SELECT 'it''s ?' WHERE p LIKE ? ESCAPE '\\'", "SELECT 'it''s ?' WHERE p LIKE %s ESCAPE '\\'"),
        ("SELECT '100%' || ?", "SELECT '100%%' || %s"),
    ],
)
def test_qmark_placeholders_become_psycopg_ones(sql, expected):
    assert qmark_to_format(sql) == expected
    assert SQLITE.sql(sql) == sql


def test_inserts_and_upserts_differ_in_placeholders_only():
    assert SQLITE.insert("t", ("a", "b")) == "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"
    assert POSTGRESQL.insert("t", ("a", "b"), ("a",), ("b",)) == (
        "INSERT INTO t (a, b) VALUES (%s, %s) ON CONFLICT (a) DO UPDATE SET b = excluded.b"
    )


def test_empty_urls_in_the_settings_are_unset(monkeypatch):
    """``ETL_API_DATABASE_URL=`` (as in .env.example) falls back to ETL_DATABASE_URL; the console's stays unset."""
    from api.settings import ApiSettings

    monkeypatch.setenv("ETL_DATABASE_URL", "postgresql://etl:pw@db:5432/etl")
    monkeypatch.setenv("ETL_API_DATABASE_URL", "")
    monkeypatch.setenv("ETL_API_SQL_DATABASE_URL", " ")
    settings = ApiSettings(_env_file=None)
    assert settings.api_database_url is None and settings.api_sql_database_url is None
    assert settings.database().engine == "postgresql" and settings.console_database().engine == "postgresql"
    monkeypatch.setenv("ETL_DATABASE_URL", "")
    assert ApiSettings(_env_file=None).database() == parse_url("", "database/data.db")


def test_a_bad_url_in_the_settings_is_refused_without_the_password(monkeypatch):
    from pydantic import ValidationError

    from saver.settings import SaverSettings

    monkeypatch.setenv("ETL_DATABASE_URL", "postgresql://etl:hunter2@db:notaport/etl")
    with pytest.raises(ValidationError, match="malformed") as raised:
        SaverSettings(_env_file=None)
    (error,) = raised.value.errors()
    assert "hunter2" not in error["msg"]  # the message services print (etl_common.settings.load shows no input)
