"""A private PostgreSQL cluster on loopback for the tests: initdb in a temporary folder, a free port, then removed."""

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from testbed import free_port

# Debian's layout (apt-get install postgresql); the newest installed major version is used.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# The user a cluster runs as when the tests run as root (postgres refuses root); the Debian package creates it.
SERVICE_USER = "postgres"


def binaries() -> Path | None:
    """The bin folder of the newest PostgreSQL under /usr/lib/postgresql, or of initdb on the PATH; None without one."""
    versions = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class Postgres:
    """One running cluster: its superuser's URL, and a database made per caller with ``create_database``."""

    bin: Path
    dir: Path
    port: int
    password: str
    proc: "subprocess.Popen[bytes]"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def url(self, database: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        """``postgresql://user:password@127.0.0.1:port/database`` (the superuser's password unless given)."""
        secret = quote(self.password if password is None else password, safe="")
        return f"postgresql://{quote(user, safe='')}:{secret}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (UTF8, C collation as SQLite compares text); its superuser URL."""
        name = name or f"t{secrets.token_hex(5)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8 LOCALE "C"')
        return self.url(name)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions ended, no waiting for clients), then the folder is removed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # immediate shutdown is SIGQUIT; a hung postmaster gets SIGKILL
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _service_ids() -> tuple[int | None, int | None]:
    """(uid, gid) of SERVICE_USER to drop root to; (None, None) when not root."""
    if os.geteuid() != 0:
        return None, None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL as "
            "(the postgresql package creates it; or run the tests as an ordinary user)"
        ) from exc
    return entry.pw_uid, entry.pw_gid


def start_postgres(timeout_s: float = 60.0) -> Postgres:
    """initdb a cluster in a new temporary folder and start it on a free loopback port; ready when this returns."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    # Not under pytest's tmp (mode 0700, root's): the service user must be able to reach its folder.
    d = Path(tempfile.mkdtemp(prefix="etl-postgres-"))
    uid, gid = _service_ids()
    groups: list[int] | None = None if uid is None else []  # none of root's supplementary groups
    password = secrets.token_urlsafe(18)
    (d / "pwfile").write_text(password + "\n")
    if uid is not None and gid is not None:
        for path in (d, d / "pwfile"):
            os.chown(path, uid, gid)
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(d / "data"),
            "-U",
            "postgres",
            "--pwfile",
            str(d / "pwfile"),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: no fsync of the new files
        ],
        capture_output=True,
        text=True,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    if init.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
    port = free_port()
    log = (d / "postgres.log").open("ab")
    proc = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(d / "data"),
            "-p",
            str(port),
            "-k",
            str(d),  # the unix socket in the folder, not /var/run/postgresql
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",  # a throwaway cluster; durability is not what the tests check
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    log.close()
    server = Postgres(bin_dir, d, port, password, proc)
    try:
        _wait_ready(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: Postgres, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.proc.returncode}: {server.log()[-2000:]}")
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL not ready after {timeout_s}s: {server.log()[-2000:]}") from None
            time.sleep(0.1)


# Parents before children (foreign keys); every table the SQLite migrations make but schema_migrations.
_TABLES = (
    "etl_runs",
    "loaded_pages",
    "raw_users",
    "processed_users",
    "invalid_users",
    "uploaded_files",
    "run_quality",
    "loading_files",
    "retention_log",
    "page_schemas",
    "run_schema",
)


def load_from_sqlite(sqlite_path: Path, url: str) -> dict[str, int]:
    """Migrate the PostgreSQL database at ``url`` and copy every row of the SQLite file into it, ids included.

    What a saver on PostgreSQL would have written for the same pages: the tests read both engines over
    the same data. COPY per table, in one transaction; the identity sequences then continue after the ids.
    Returns the rows copied per table.
    """
    from etl_common.db import connect_reader, connect_writer, parse_url
    from saver.migrate import migrate

    copied: dict[str, int] = {}
    source = connect_reader(sqlite_path)
    try:
        with connect_writer(parse_url(url)) as conn:
            assert isinstance(conn, psycopg.Connection)
            migrate(conn)
            with conn.transaction():
                for table in _TABLES:
                    columns = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
                    rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
                    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(tuple(row))
                    copied[table] = len(rows)
                    if "id" in columns:
                        conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                        )
    finally:
        source.close()
    return copied


def make_roles(server: Postgres, url: str) -> tuple[str, str]:
    """Login roles of the API's reader and of the SQL console for the database at ``url``, granted by the migrator.

    Their URLs (reader, console). Roles belong to the cluster: each call makes new names.
    """
    from etl_common.db import connect_writer, parse_url
    from saver.migrate import migrate

    tag = secrets.token_hex(4)
    reader, console = f"etl_reader_{tag}", f"etl_console_{tag}"
    passwords = {reader: secrets.token_urlsafe(12), console: secrets.token_urlsafe(12)}
    database = url.rsplit("/", 1)[1]
    with connect_writer(parse_url(url)) as conn:
        assert isinstance(conn, psycopg.Connection)
        for role, password in passwords.items():
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        migrate(conn, reader_role=reader, console_role=console)
    return (
        server.url(database, reader, passwords[reader]),
        server.url(database, console, passwords[console]),
    )
