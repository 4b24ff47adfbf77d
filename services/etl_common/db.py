"""The database: which engine a URL names, the writer's and readers' connections, and each engine's SQL dialect.

SQLite (the embedded default: a file, one writer in WAL mode, read-only readers) or PostgreSQL 14+
through psycopg 3. ``ETL_DATABASE_URL`` chooses: empty means SQLite at ``ETL_DB_PATH``.
"""

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, overload
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import AfterValidator, SecretStr

from etl_common.settings import BAD_ESCAPE, redact_url

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


# The URL parameters libpq reads a password from.
_SECRET_PARAMETERS = ("password", "sslpassword")


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
        """The URL without its passwords (``user:password@`` and the ``password``/``sslpassword`` parameters)."""
        if self.engine == "sqlite":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return redact_url(self.url)
        netloc = parts.netloc.rsplit("@", 1)
        return redact_url(self.url.replace(parts.netloc, f"{parts.username or ''}:***@{netloc[-1]}", 1))

    def secrets(self) -> set[str]:
        """The URL's passwords, as written and decoded: to scrub them from the driver's messages."""
        if self.engine == "sqlite":
            return set()
        parts = urlsplit(self.url)
        found = {parts.password or ""} | {v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMETERS}
        return ({unquote(v) for v in found} | found) - {""}


def parse_url(url: str | None, default_path: str | Path = "database/data.db") -> DatabaseUrl:
    """The engine and address of ``url``; empty means the SQLite file ``default_path``.

    ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``postgresql://user:password@host:port/db?...``.
    """
    text = (url or "").strip()
    if not text:
        path = Path(default_path)
        return DatabaseUrl("sqlite", f"sqlite:///{path}", path)
    if BAD_ESCAPE.search(text):
        # libpq refuses it with the token (the password, often) in its message: said here without the value.
        raise BadDatabaseUrl(
            "the database URL is malformed: a '%' not followed by two hex digits; percent-encode the password's "
            "special characters (% is %25, @ is %40, : is %3A, / is %2F)"
        )
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
    except ValueError:
        # The parser's message may quote a piece of the password (an unencoded '/' or ':' moves the port's start).
        raise BadDatabaseUrl(
            "the PostgreSQL URL is malformed (its port is not a number, or its host is not a valid address): "
            "postgresql://user:password@host:5432/database, the password's special characters percent-encoded"
        ) from None
    if "@" in parts.path:
        # A password holding an unencoded '/' ends the host early: the rest of it would be taken for the database.
        raise BadDatabaseUrl(
            "the PostgreSQL URL is malformed: an '@' after the host; percent-encode the password's special "
            "characters (/ is %2F, @ is %40)"
        )
    if not parts.path.strip("/"):
        raise BadDatabaseUrl("the PostgreSQL URL names no database: postgresql://user:password@host:5432/DATABASE")
    # psycopg (libpq) takes postgresql:// and postgres:// only.
    return DatabaseUrl("postgresql", "postgresql://" + text.split("://", 1)[1])


def _where_and_why(exc: Exception, target: DatabaseUrl) -> tuple[str, str]:
    """``host:port`` of ``target`` and the driver's message with every secret of the URL as ``***``."""
    parts = urlsplit(target.url)
    text = str(exc)
    for secret in sorted(target.secrets(), key=len, reverse=True):
        text = text.replace(secret, "***")
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}", text


def connection_problem(exc: Exception, target: DatabaseUrl) -> str:
    """Why the driver could not connect to ``target``, in one line naming the cause and the next step, no password.

    libpq's messages (psycopg gives no SQLSTATE for them) are matched by their fixed words.
    """
    if target.engine == "sqlite":
        return f"{type(exc).__name__}: {exc}"  # a file's trouble: SQLite's words name it, and it has no password
    parts = urlsplit(target.url)
    where, text = _where_and_why(exc, target)
    lower = text.lower()
    if "password authentication failed" in lower or "authentication failed" in lower or "no password supplied" in lower:
        return (
            f"login refused by PostgreSQL at {where} for user {parts.username or '(none)'}: wrong password or user; "
            "fix the password in the URL (or the role's password)"
        )
    if "pg_hba.conf" in lower:
        return f"login refused by PostgreSQL at {where}: no pg_hba.conf entry lets this user in from here"
    if "connection refused" in lower:
        return f"connection refused at {where}: is PostgreSQL running and listening there? (check host and port)"
    if "failed to resolve host" in lower or "could not translate host name" in lower:
        return f"the host {parts.hostname} cannot be resolved: check the host name in the URL"
    if "timeout expired" in lower or "timed out" in lower:
        return f"no answer from {where} in time: check the host, the port and the network (a firewall?)"
    if "does not exist" in lower and "database" in lower:
        return f"the database {parts.path.strip('/')} does not exist at {where}: create it or fix the URL"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot use PostgreSQL at {where}: {first.removeprefix('connection failed: ')}"


def connection_lost(exc: Exception, target: DatabaseUrl) -> str:
    """The line of a process whose PostgreSQL connection was closed under it: where, why, and the next step."""
    where, text = _where_and_why(exc, target)
    cause = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (
        f"lost the connection to PostgreSQL at {where} ({cause}); "
        "stopping so that it is restarted (what was not acknowledged is delivered again): if it keeps stopping, "
        "check that PostgreSQL is up"
    )


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


# Pages of 16 KiB instead of SQLite's 4 KiB: a user's row (~1.8 KB of JSON) filled half of a small page, and each
# commit wrote its pages to the WAL one frame (two system calls) at a time; with 16 KiB pages the saver's inserts and
# commits of a 20,000-user run took ~17 us of CPU per user instead of ~24 (measured on the saver's own statements).
SQLITE_PAGE_SIZE = 16384


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
    # A new file gets pages of SQLITE_PAGE_SIZE (an existing one keeps its own; WAL mode fixes it, so first).
    conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
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
