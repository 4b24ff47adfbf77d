"""The database: which engine a URL names, the writer's and readers' connections, and each engine's SQL dialect.

SQLite (the embedded default: a file, one writer in WAL mode, read-only readers) or PostgreSQL 14+
through psycopg 3. ``ETL_DATABASE_URL`` chooses: empty means SQLite at ``ETL_DB_PATH``.
"""

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, overload
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, SecretStr

if TYPE_CHECKING:
    import psycopg

Engine = Literal["sqlite", "postgresql"]
# The URL schemes of each engine (SQLAlchemy's spellings are accepted, with psycopg as the driver).
_SCHEMES: dict[str, Engine] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
}


class BadDatabaseUrl(ValueError):
    """ETL_DATABASE_URL names no engine this project speaks, or is malformed."""


@dataclass(frozen=True)
class Dialect:
    """What differs in the SQL the services write for one engine; everything else is the same text."""

    name: Engine
    # The DB-API placeholder the driver takes (SQLite's qmark; psycopg's format style).
    placeholder: str
    # Case-insensitive match of ASCII letters, as SQLite's LIKE is (PostgreSQL's LIKE is case-sensitive).
    like: str
    # Equality ignoring ASCII case: SQLite's NOCASE; lower() under the C collation of every text column elsewhere.
    nocase_equal: str
    # The LIMIT value meaning "no limit".
    no_limit: int | None
    # Where NULLs sort, said explicitly so that both engines order alike (SQLite: first ascending, last descending).
    nulls_ascending: str
    nulls_descending: str
    # Now, in the project's one timestamp format (etl_common.clock.utc_iso), as an SQL expression.
    now: str
    # Seconds (to the millisecond, a float) from the timestamp text {start} to {end}; NULL when either is.
    seconds_between: str

    def insert(
        self, table: str, columns: tuple[str, ...], conflict: tuple[str, ...] = (), update: tuple[str, ...] = ()
    ) -> str:
        """``INSERT`` of one row; on a conflict on ``conflict``, nothing (no ``update``) or ``update`` from the new row.

        Both engines take ``ON CONFLICT`` (SQLite 3.24+), so only the placeholder differs.
        """
        values = ", ".join([self.placeholder] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        if not conflict:
            return sql + (" ON CONFLICT DO NOTHING" if not update else "")
        target = f" ON CONFLICT ({', '.join(conflict)})"
        if not update:
            return sql + target + " DO NOTHING"
        return sql + target + " DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in this engine's placeholder style."""
        return text if self.placeholder == "?" else qmark_to_format(text)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    like="LIKE",
    nocase_equal="{column} = ? COLLATE NOCASE",
    no_limit=-1,
    nulls_ascending="",
    nulls_descending="",
    now="strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    seconds_between="round((julianday({end}) - julianday({start})) * 86400.0, 3)",
)
POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    like="ILIKE",
    nocase_equal="lower({column}) = lower(?)",
    no_limit=None,
    nulls_ascending=" NULLS FIRST",
    nulls_descending=" NULLS LAST",
    now="""to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
    seconds_between="round(extract(epoch FROM {end}::timestamptz) - extract(epoch FROM {start}::timestamptz), 3)"
    "::float8",
)
DIALECTS: dict[Engine, Dialect] = {"sqlite": SQLITE, "postgresql": POSTGRESQL}


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed ``ETL_DATABASE_URL``: the engine, and the SQLite file or the PostgreSQL connection string."""

    engine: Engine
    url: str
    path: Path | None = None  # SQLite only

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.engine]

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        if self.engine == "sqlite":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rsplit("@", 1)
        return self.url.replace(parts.netloc, f"{parts.username or ''}:***@{netloc[-1]}", 1)


def parse_url(url: str | None, default_path: str | Path = "database/data.db") -> DatabaseUrl:
    """The engine and address of ``url``; empty means the SQLite file ``default_path``.

    ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``postgresql://user:password@host:port/db?...``.
    """
    text = (url or "").strip()
    if not text:
        path = Path(default_path)
        return DatabaseUrl("sqlite", f"sqlite:///{path}", path)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    engine = _SCHEMES.get(scheme)
    if engine is None:
        raise BadDatabaseUrl(
            f"database URL {text.split('://', 1)[0] + '://...' if scheme else 'without a scheme'} names no engine "
            "this project speaks: use sqlite:///path/to/file.db or postgresql://user:password@host:5432/database"
        )
    if engine == "sqlite":
        raw = text.split("://", 1)[1]
        if not raw.startswith("/") or raw in ("/", "//"):
            raise BadDatabaseUrl("a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        path = Path(unquote(raw[1:].split("?", 1)[0]))
        return DatabaseUrl("sqlite", text, path)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise BadDatabaseUrl(f"the PostgreSQL URL is malformed ({exc})") from exc
    if not parts.path.strip("/"):
        raise BadDatabaseUrl("the PostgreSQL URL names no database: postgresql://user:password@host:5432/DATABASE")
    # psycopg (libpq) takes postgresql:// and postgres:// only.
    return DatabaseUrl("postgresql", "postgresql://" + text.split("://", 1)[1])


def _checked(value: SecretStr | None) -> SecretStr | None:
    if value is None or not value.get_secret_value().strip():
        return None  # ETL_..._URL= (empty, as in .env.example) is the same as unset
    parse_url(value.get_secret_value())  # BadDatabaseUrl (a ValueError) says what is wrong, without the password
    return value


# A settings field holding a database URL (it may hold a password): checked when the settings load; empty is None.
DatabaseUrlSetting = Annotated[SecretStr | None, AfterValidator(_checked)]
# psycopg is imported when a PostgreSQL connection is opened: it adds ~0.5 s and ~23 MB to a process that
# never uses it (measured), and SQLite is the default.
Connection: TypeAlias = "sqlite3.Connection | psycopg.Connection[Any]"


@overload
def connect_writer(target: str | Path) -> sqlite3.Connection: ...
@overload
def connect_writer(target: DatabaseUrl) -> Connection: ...
def connect_writer(target: str | Path | DatabaseUrl) -> Connection:
    """The saver's connection, in autocommit mode so that transactions are explicit (BEGIN IMMEDIATE on SQLite)."""
    if isinstance(target, DatabaseUrl):
        if target.engine == "postgresql":
            import psycopg

            return psycopg.connect(target.url, autocommit=True, application_name="etl-saver")
        assert target.path is not None
        target = target.path
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(target), isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    return conn


@overload
def connect_reader(target: str | Path) -> sqlite3.Connection: ...
@overload
def connect_reader(target: DatabaseUrl) -> Connection: ...
def connect_reader(target: str | Path | DatabaseUrl) -> Connection:
    """A read-only connection: SQLite's mode=ro and query_only (never blocks the writer under WAL); on PostgreSQL
    autocommit with read-only transactions, so no statement can write and no transaction stays open between reads."""
    if isinstance(target, DatabaseUrl):
        if target.engine == "postgresql":
            import psycopg

            return psycopg.connect(
                target.url,
                autocommit=True,
                application_name="etl-reader",
                options="-c default_transaction_read_only=on",
                connect_timeout=10,
            )
        assert target.path is not None
        target = target.path
    uri = f"file:{Path(target).resolve()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.row_factory = sqlite3.Row
    return conn


def qmark_to_format(text: str) -> str:
    """SQL with ``?`` placeholders in psycopg's style: ``?`` becomes ``%s`` and a literal ``%`` ``%%``.

    Quoted strings and identifiers are copied as they are but for the ``%`` doubling (psycopg reads the
    whole text), so a ``?`` inside ``'...'`` stays a question mark.
    """
    out: list[str] = []
    quote = ""
    for char in text:
        if char == "%":
            out.append("%%")
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)
