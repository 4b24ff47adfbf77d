"""Entry point: ``python -m saver`` serves until SIGTERM; ``migrate``; ``vacuum``; ``keygen`` and ``decrypt``."""

import argparse
import sys
from pathlib import Path

import structlog

from etl_common import runtime
from etl_common.db import DatabaseUrl, connect_writer, connection_lost, connection_problem
from etl_common.settings import from_env_file, load
from saver import crypto
from saver.migrate import migrate
from saver.retention import make_incremental
from saver.settings import SaverSettings
from saver.store import Store
from saver.worker import Worker

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m saver", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="load pages, write and upload files (the default)")
    sub.add_parser("migrate", help="apply the database migrations and exit")
    sub.add_parser(
        "vacuum", help="switch an existing database to incremental vacuum (one full VACUUM; stop the saver first)"
    )
    keygen = sub.add_parser("keygen", help="create an age key pair; prints the public key (ETL_ENCRYPTION_RECIPIENTS)")
    keygen.add_argument("-o", "--output", required=True, help="identity file to create (mode 0600, never overwritten)")
    decrypt = sub.add_parser("decrypt", help="decrypt an uploaded .age file; OUT appears only if it authenticates")
    decrypt.add_argument("-i", "--identity", required=True, help="age identity file (from keygen)")
    decrypt.add_argument("input", help="the .age file")
    decrypt.add_argument("output", help="where to write the plaintext .jsonl")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command (default ``serve``); exit status 1 when an age command fails or Redis stays away, 2 on a bad
    setting or recipient, or a PostgreSQL database that the saver cannot reach or log in to."""
    args = _parser().parse_args(argv)
    if args.command in ("keygen", "decrypt"):
        return _age_command(args)
    settings = load(SaverSettings)
    if settings.encryption_enabled:
        # Fail at start-up on a malformed recipient, not at the end of the first run.
        try:
            crypto.load_recipients(settings.encryption_recipients, settings.encryption_recipients_file)
        except crypto.CryptoError as exc:
            print(f"invalid setting: {exc}{from_env_file(str(exc))}", file=sys.stderr)
            return 2
    database = settings.database()
    if database.engine == "postgresql":
        if args.command in ("migrate", "vacuum"):
            return _postgresql_command(args.command, settings)
    else:
        named_by = "ETL_DATABASE_URL" if settings.database_url else "ETL_DB_PATH"  # the setting the file came from
        runtime.require_writable("saver", named_by, Path(settings.db_path), folder=False)
    runtime.require_writable("saver", "ETL_DATA_DIR", Path(settings.data_dir))
    store = _open_store(database)
    if store is None:
        return 2
    if args.command in ("migrate", "vacuum"):
        if args.command == "vacuum":
            print(make_incremental(store.conn), file=sys.stderr)
        store.close()
        return 0
    try:
        runtime.run_worker(
            "saver", settings, lambda client, heartbeat, stopper: Worker(settings, client, store, heartbeat, stopper)
        )
    except Exception as exc:
        if not store.connection_lost():
            raise
        # Only a new process reconnects: the supervisor restarts it; a traceback would say no more than this line.
        log.error(connection_lost(exc, database))
        return 1
    finally:
        store.close()
    return 0


def _postgresql_command(command: str | None, settings: SaverSettings) -> int:
    """``migrate`` on PostgreSQL (the tables, then the roles' grants); ``vacuum`` is SQLite's (autovacuum here)."""
    database = settings.database()
    if command != "migrate":
        print(
            f"`python -m saver vacuum` is for a SQLite file; ETL_DATABASE_URL names PostgreSQL "
            f"({database.redacted()}), whose autovacuum returns freed space by itself",
            file=sys.stderr,
        )
        return 2
    import psycopg  # only here: SQLite deployments never load it

    try:
        with connect_writer(database) as conn:
            applied = migrate(conn, settings.database_reader_role, settings.database_console_role)
    except psycopg.Error as exc:
        print(
            f"cannot migrate {database.redacted()}: {connection_problem(exc, database)} (ETL_DATABASE_URL)",
            file=sys.stderr,
        )
        return 2
    print(f"{database.redacted()}: applied {', '.join(applied) or 'nothing (up to date)'}", file=sys.stderr)
    return 0


def _open_store(database: DatabaseUrl) -> Store | None:
    """The store; None after one line on stderr when PostgreSQL cannot be reached or logged in to."""
    if database.engine != "postgresql":
        return Store(database)
    import psycopg  # only here: SQLite deployments never load it

    try:
        return Store(database)
    except psycopg.Error as exc:
        print(
            f"cannot use {database.redacted()}: {connection_problem(exc, database)} (ETL_DATABASE_URL)",
            file=sys.stderr,
        )
        return None


def _age_command(args: argparse.Namespace) -> int:
    """Operator commands: they need no settings, Redis or database."""
    try:
        if args.command == "keygen":
            public = crypto.keygen(args.output)
            print(public)
            print(
                f"identity written to {args.output} (keep it secret); the public key, printed on standard output, "
                "goes to the saver (ETL_ENCRYPTION_RECIPIENTS)",
                file=sys.stderr,
            )
        else:
            size = crypto.decrypt_file(args.input, args.output, crypto.load_identities(args.identity))
            print(f"decrypted {args.input} -> {args.output} ({size} bytes)", file=sys.stderr)
    except crypto.CryptoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
