"""`make demo`: starts Redis, an SFTP server, the source and the four services locally, performs one run, reports it.

Settings come from the environment, then `.env` (as for the services). Everything it starts dies with it,
however it ends; one demo at a time per checkout. Exit codes: 0 done, 1 the run or a part failed,
2 a setting is wrong or a port it needs is taken.
"""

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import httpx
import redis
from dotenv import dotenv_values
from pydantic import ValidationError

import testbed as tb
from api.settings import ApiSettings
from etl_common import setting_names
from etl_common.db import connect_writer, connection_problem, parse_url
from etl_common.keys import Keys
from etl_common.settings import describe, from_env_file
from extractor.checkpoint import Checkpoint
from extractor.settings import ExtractorSettings
from saver.settings import SaverSettings
from testbed.progress import Progress
from testbed.stack import how_it_ended, last_words
from transformer.settings import TransformerSettings

# The demo's folder (the checkout; --home moves it, for the tests): .env, .run/, database/, data/, sftp_data/.
ROOT = tb.ROOT
RUN = ROOT / ".run"
DB = ROOT / "database" / "data.db"
# The database the services share: DB, or the PostgreSQL database of ETL_DATABASE_URL (settings_env).
DATABASE: Path | str = DB


def _db_exists() -> bool:
    return isinstance(DATABASE, str) or DB.exists()


FINAL = tb.FINAL_STATUSES
# Dev servers of the usual frontend stacks: React/Next (3000), Vite (5173), Angular (4200), Vue CLI (8080).
CORS_ORIGINS = ",".join(
    f"http://{host}:{port}" for port in (3000, 5173, 4200, 8080) for host in ("localhost", "127.0.0.1")
)
KEEP_LOG_DIRS = 5
DEFAULT_OPS_PORT = 9101
SETTINGS = (ExtractorSettings, TransformerSettings, SaverSettings, ApiSettings)


class Refused(Exception):
    """The demo cannot start; the message says why and what to do (exit code ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Stop(Exception):
    """SIGTERM or SIGHUP (a closed terminal): stop everything, like Ctrl-C."""


def settings_env() -> dict[str, str]:
    """ETL_* settings: the environment first, then `.env` in the checkout (as pydantic-settings reads it)."""
    dotenv = dotenv_values(ROOT / ".env") if (ROOT / ".env").exists() else {}
    merged = {k: v for k, v in dotenv.items() if k.startswith("ETL_") and v is not None}
    merged.update({k: v for k, v in os.environ.items() if k.startswith("ETL_")})
    return merged


def check_settings(env: dict[str, str]) -> None:
    """Every service's settings with ``env``: a bad value stops the demo with one line and exit code 2.

    The demo knows every service, so an ETL_* name none of them reads is refused (``Refused``, code 2),
    with the closest setting when there is one: a misspelt name would otherwise be ignored.
    """
    unknown = sorted(set(env) - setting_names.KNOWN)
    if unknown:
        hints = []
        for name in unknown:
            close = setting_names.suggestion(name, setting_names.SETTINGS)
            hints.append(f"{name} (did you mean {close}?)" if close else name)
        raise Refused(f"unknown setting {', '.join(hints)}: no service reads it; fix or remove it", code=2)
    values = {k.removeprefix("ETL_").lower(): v for k, v in env.items()}
    for cls in SETTINGS:
        try:
            cls(_env_file=None, **values)
        except ValidationError as exc:
            raise Refused(f"invalid setting: {describe(exc)}", code=2) from None


def follow_database(env: dict[str, str], stack: tb.Stack) -> None:
    """Watch the database the services write: ETL_DATABASE_URL's (parsed as they parse it), else database/data.db.

    A relative SQLite path is the demo's folder's (the services run elsewhere: they are handed the absolute
    path). A PostgreSQL database that cannot be reached or logged in to stops the demo here, in one line
    (``Refused``, code 2), as it stops the saver.
    """
    global DATABASE, DB
    database = parse_url(env.get("ETL_DATABASE_URL"), DB)
    if database.engine == "sqlite":
        assert database.path is not None
        DB = DATABASE = stack.db_path = database.path if database.path.is_absolute() else ROOT / database.path
        if env.get("ETL_DATABASE_URL", "").strip():
            env["ETL_DATABASE_URL"] = f"sqlite:///{DB}"
        return
    DATABASE = database.url
    import psycopg  # only here: a SQLite demo never loads it

    try:
        connect_writer(database).close()
    except psycopg.Error as exc:
        raise Refused(
            f"cannot use {database.redacted()}: {connection_problem(exc, database)} (ETL_DATABASE_URL)", code=2
        ) from None


def ops_ports_base(value: str | None) -> int:
    """The extractor's /metrics port; the transformer and the saver take the next two.

    Unset: 9101. ``0`` (off for a service) is not honoured: the demo waits on these ports to know
    the workers are up, so it says so and uses 9101-9103. ``Refused`` (exit code 2) when the
    third port would pass 65535.
    """
    base = int(value) if value and value.strip() else None
    if base == 0:
        print("note: ETL_OPS_PORT=0 (off) is not honoured by the demo: /metrics on 9101-9103", file=sys.stderr)
    if not base:
        return DEFAULT_OPS_PORT
    if base + 2 > 65535:
        raise Refused(
            f"ETL_OPS_PORT={base}: the demo uses it and the next two ports (transformer, saver), "
            "so it must be at most 65533",
            code=2,
        )
    return base


def lock_checkout() -> IO[str]:
    """Hold `.run/demo.lock` for the demo's life (the kernel releases it however the demo ends)."""
    RUN.mkdir(parents=True, exist_ok=True)
    fh = (RUN / "demo.lock").open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        raise Refused(
            f"another `make demo` is running in this checkout (pid {pid}); stop it first (Ctrl-C in its terminal)"
        ) from None
    fh.truncate(0)
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def check_ports(ports: list[tuple[str, str, int, str]]) -> None:
    """Refuse at once when a port the demo needs is taken: (what, host, port, variable that moves it)."""
    busy = []
    for what, host, port, variable in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(f"{port} ({what}; choose another with {variable}=...)")
    if busy:
        raise Refused(f"ports in use by another program: {', '.join(busy)}", code=2)


def api_token(env: dict[str, str]) -> tuple[str, str]:
    """The API token and where it comes from: ETL_API_TOKEN, else one generated once and kept in .run/."""
    if env.get("ETL_API_TOKEN"):
        return env["ETL_API_TOKEN"], "ETL_API_TOKEN"
    path = RUN / "api_token"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip(), f"generated, kept in {path.relative_to(ROOT)}"
    token = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(token)
    return token, f"generated, kept in {path.relative_to(ROOT)}"


def log_dir() -> Path:
    """A log folder per demo (`.run/logs/<UTC time>`, `latest` points to it); older ones beyond a few removed."""
    base = RUN / "logs"
    base.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())[: -(KEEP_LOG_DIRS - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    # Earlier demos' Redis and sshd logs (named by their port) and the appended-forever files of older versions.
    for stale in [*base.glob("*.log"), *(RUN / "redis").glob("*.log"), *(RUN / "sshd").glob("*.log")]:
        stale.unlink()
    here = base / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    here.mkdir(exist_ok=True)
    latest = base / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(here.name)
    return here


def _db_name() -> str:
    if isinstance(DATABASE, str):
        return parse_url(DATABASE).redacted()
    return str(DB.relative_to(ROOT)) if DB.is_relative_to(ROOT) else str(DB)


def earlier_state(client: redis.Redis, prefix: str) -> tuple[list[str], str | None]:
    """Notes on what earlier demos left (database runs, an unfinished run) and the run id to resume, if any."""
    notes = []
    if _db_exists():
        with contextlib.closing(tb.reader(DATABASE)) as conn:
            with contextlib.suppress(sqlite3.Error):
                (count,) = conn.execute("SELECT count(*) FROM etl_runs").fetchone()
                if count:
                    notes.append(f"{_db_name()} keeps {count} run(s) of earlier demos")
    cp = Checkpoint.load(client, Keys(prefix).checkpoint)
    if cp is not None:
        done = f"{cp.records} of {cp.total} users" if cp.total >= 0 else "no page yet"
        notes.append(f"resuming run {cp.run_id} left unfinished by an earlier demo ({done} fetched then)")
    return notes, (cp.run_id if cp else None)


def run_row(run_id: str | None, after_id: int) -> sqlite3.Row | None:
    """The demo's run: ``run_id`` when resuming, else the first run created after row ``after_id``."""
    if not _db_exists():
        return None
    with contextlib.closing(tb.reader(DATABASE)) as conn:
        try:
            if run_id:
                return conn.execute("SELECT * FROM etl_runs WHERE run_id=?", (run_id,)).fetchone()
            return conn.execute("SELECT * FROM etl_runs WHERE id>? ORDER BY id LIMIT 1", (after_id,)).fetchone()
        except sqlite3.Error:
            return None


def last_row_id() -> int:
    row = tb.latest_run(DATABASE)
    return int(row["id"]) if row is not None else 0


def wait_run(
    extract: tb.Proc, services: list[tb.Proc], run_id: str | None, after_id: int, client: redis.Redis, prefix: str
) -> tuple[sqlite3.Row | None, int | None]:
    """Follow the run with a progress display until it is final or the extraction fails: (row, exit code).

    RuntimeError when one of ``services`` exits meanwhile.
    """
    progress = Progress(sys.stderr)
    # A resumed run is already final (failed) before the extractor takes it up again: wait for a change.
    earlier = run_row(run_id, after_id)
    stale = earlier["updated_at"] if earlier is not None else None
    try:
        while True:
            row = run_row(run_id, after_id)
            code = extract.popen.poll()
            fresh = row is not None and row["updated_at"] != stale
            if row is not None and ((fresh and row["status"] in FINAL) or code not in (None, 0)):
                return row, code
            if code not in (None, 0):
                time.sleep(1.0)  # the saver records the failure from the events stream
                return run_row(run_id, after_id), code
            dead = next((p for p in services if not p.alive()), None)
            if dead is not None:
                raise RuntimeError(
                    f"{dead.name} {how_it_ended(dead)} during the run (its log: {dead.log}); "
                    "`make demo` resumes the run"
                )
            cp = Checkpoint.load(client, Keys(prefix).checkpoint)
            total = (cp.total if cp else -1) if row is None or row["total_expected"] is None else row["total_expected"]
            pages = _pages_loaded(row["run_id"]) if row is not None else 0
            progress.update((row["raw_count"] or 0) if row is not None else 0, total, pages, retrying(extract))
            time.sleep(0.5)
    finally:
        progress.close()


# The extractor's log events (services/extractor/source.py, run.py) that say where a page fetch stands.
RETRY_EVENT = "source request failed, retrying"
FETCH_EVENTS = {RETRY_EVENT, "page handed on", "run started", "resuming run", "extraction complete"}


def retrying(extract: tb.Proc) -> str:
    """The source is being retried (its log says why): "retrying the source ...", else ""."""
    try:
        with extract.log.open("rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - 16384, 0))
            tail = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(tail):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") not in FETCH_EVENTS:
            continue
        if record["event"] != RETRY_EVENT:
            return ""
        return (
            f"retrying the source (try {int(record.get('attempt', 0)) + 1} after a {record.get('wait_s', '?')}s wait): "
            f"{record.get('error', 'no cause logged')}"
        )
    return ""


def _pages_loaded(run_id: str) -> int:
    with contextlib.closing(tb.reader(DATABASE)) as conn:
        return int(conn.execute("SELECT count(*) FROM loaded_pages WHERE run_id=?", (run_id,)).fetchone()[0])


def failure_line(row: sqlite3.Row | None, extract: tb.Proc, env: dict[str, str]) -> str:
    """One line: what failed and the next step."""
    cause = (row["error"] if row is not None else None) or _last_error(extract) or "no cause recorded"
    run = f"run {row['run_id']}" if row is not None else "the run"
    if "source" in cause:
        step = (
            f"check ETL_SOURCE_URL ({env['ETL_SOURCE_URL']}) or allow more retries with ETL_RETRY_DELAYS; "
            "`make demo` resumes the run, `make clean` starts over"
        )
    elif row is not None and row["status"] == "upload_pending":
        step = "the saver keeps retrying the upload; see the saver's log, `make clean` starts over"
    else:
        step = f"see {extract.log.parent}, `make clean` starts over"
    return f"{run} failed: {cause}. Next: {step}"


def _last_error(proc: tb.Proc) -> str:
    for line in reversed(proc.output().splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("error"):
                return str(record["error"])
    return ""


def summary(run: sqlite3.Row, seconds: float, api: str, runs: int, token: tuple[str, str], facts: dict) -> str:
    """The report of the run: counts, files, database, API, metrics ports; one line each."""
    lines = [
        f"run {run['run_id']} {run['status']} in {seconds:.2f}s",
        f"  records: {run['raw_count']} fetched, {run['valid_count']} valid, {run['invalid_count']} invalid"
        + (f" ({facts['broken']})" if facts.get("broken") else ""),
        f"  database: {_db_name()}",
        f"  files in sftp_data/: {run['raw_file']}, {run['processed_file']}, {run['dlq_file']}",
        f"  API: {api}/etl_runs ({runs} run(s)), docs at {api}/docs (offline)",
        f"  token: Authorization: Bearer {token[0]} ({token[1]})",
        f"  console: {api}/ui/#token={token[0]} (the web console; this link signs in)",
        f"  CORS: {facts['cors']} (ETL_API_CORS_ORIGINS)",
        "  metrics: " + ", ".join(f"{name} {url}" for name, url in facts["metrics"].items()),
        f"  logs: {facts['logs']}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo like Ctrl-C does: everything it started is stopped."""

    def handler(signum: int, _: object) -> None:
        raise Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="stop everything after the summary")
    parser.add_argument("--users", type=int, default=208, help="users served by the local source")
    parser.add_argument(
        "--bad-every", type=int, default=25, help="every Nth user of the local source is broken (0: none)"
    )
    parser.add_argument("--home", type=Path, default=tb.ROOT, help="folder of the demo's .env and state")
    args = parser.parse_args()
    global ROOT, RUN, DB
    ROOT, RUN, DB = args.home.resolve(), args.home.resolve() / ".run", args.home.resolve() / "database" / "data.db"
    stack = tb.Stack(ROOT, db_path=DB, data_dir=ROOT / "data")

    def stop_all() -> None:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not leave half of them running
        stack.close()

    try:
        with stop_on_signals():
            return demo(args, stack)
    except (KeyboardInterrupt, Stop):
        return 0
    except Refused as exc:
        print(f"demo refused: {exc}{from_env_file(str(exc), ROOT / '.env')}", file=sys.stderr)
        return exc.code
    except (RuntimeError, TimeoutError, OSError, redis.RedisError) as exc:
        # A value copied from .env.example fails in a service: the line says where it was set.
        note = from_env_file(str(exc), ROOT / ".env")
        print(f"demo failed: {exc}{note}; see {RUN / 'logs' / 'latest'}", file=sys.stderr)
        return 1
    finally:
        stop_all()


def demo(args: argparse.Namespace, stack: tb.Stack) -> int:
    env = settings_env()
    env.setdefault("ETL_API_PORT", "8000")
    env.setdefault("ETL_API_CORS_ORIGINS", CORS_ORIGINS)
    check_settings(env)  # first: a value that is not a port stops here with one line
    follow_database(env, stack)
    ops_base = ops_ports_base(env.get("ETL_OPS_PORT"))
    env["ETL_OPS_PORT"] = str(ops_base)
    api_host, api_port = env.get("ETL_API_HOST", "127.0.0.1"), int(env["ETL_API_PORT"])
    ops = {"extractor": ops_base, "transformer": ops_base + 1, "saver": ops_base + 2}
    lock = lock_checkout()  # noqa: F841 - held until the process ends
    check_ports(
        [("the API", api_host, api_port, "ETL_API_PORT")]
        + [(f"{name} /metrics", "127.0.0.1", port, "ETL_OPS_PORT") for name, port in ops.items()]
    )
    tb.bind_children()
    logs = stack.logdir = log_dir()
    redis_srv = stack.start_redis(RUN / "redis", aof=True)
    client = redis.Redis.from_url(redis_srv.url)
    prefix = env.get("ETL_KEY_PREFIX", "etl:")
    notes, resume_id = earlier_state(client, prefix)
    stack.start_sftp(RUN / "sshd", RUN / "ssh_keys", ROOT / "sftp_data")
    broken = ""
    if not env.get("ETL_SOURCE_URL"):
        env["ETL_SOURCE_URL"] = stack.start_source("--count", str(args.users), "--bad-every", str(args.bad_every))
        if args.bad_every:
            broken = (
                f"the local source breaks every {args.bad_every}th user on purpose; "
                "`make demo BAD_EVERY=0` (--bad-every 0) turns it off"
            )
    token = api_token(env)
    env.update({"ETL_API_TOKEN": token[0], "ETL_API_AUTH": "token", "ETL_OPS_HOST": "127.0.0.1"})
    # The stack's own parts and paths (Redis, SFTP, database, files; its settings still empty) over the settings.
    env = stack.settings = {**env, **stack.env()}
    for note in notes:
        print(f"note: {note}; `make clean` starts from scratch", flush=True)
    stack.ports = {"transformer": ops["transformer"], "saver": ops["saver"], "api": api_port}
    stack.up(("transformer", "saver", "api"))
    print(f"services up; logs in {logs}; extracting from {env['ETL_SOURCE_URL']}", flush=True)
    t0 = time.monotonic()
    after_id = last_row_id()
    services = list(stack.procs.values())
    # Started last, so stopped first on Ctrl-C while Redis still runs: it frees its lease for the next demo.
    extract = stack.start("extractor", "once", "--ops", ETL_OPS_PORT=str(ops["extractor"]))
    run, code = wait_run(extract, services, resume_id, after_id, client, prefix)
    if code not in (None, 0) or run is None or run["status"] != "succeeded":
        print(failure_line(run, extract, env), file=sys.stderr)
        return 1
    api = f"http://{api_host}:{api_port}"
    runs = httpx.get(f"{api}/etl_runs", headers={"Authorization": f"Bearer {token[0]}"}, timeout=10).json()
    facts = {
        "broken": broken,
        "cors": env["ETL_API_CORS_ORIGINS"] or "off",
        "metrics": {"api": f"{api}/metrics", **{n: f"http://127.0.0.1:{p}/metrics" for n, p in ops.items()}},
        "logs": logs,
    }
    print("\n" + summary(run, time.monotonic() - t0, api, len(runs), token, facts), flush=True)
    if args.once:
        stack.close()
        print(
            "stopped (ONCE=1): the API, console and metrics above no longer answer; "
            "`make demo` without ONCE=1 keeps them serving until Ctrl-C",
            flush=True,
        )
        return 0
    extract.popen.wait()  # its ops port is the serving extractor's
    stack.procs.pop("extractor")
    stack.start("extractor", ETL_OPS_PORT=str(ops["extractor"]))
    print("serving until Ctrl-C (the extractor also runs on its daily schedule)", flush=True)
    while all(p.alive() for p in stack.procs.values()):
        time.sleep(1)
    dead = next(p for p in stack.procs.values() if not p.alive())
    print(
        f"stopped: {dead.name} {how_it_ended(dead)} (its last log line: {last_words(dead)}); see {dead.log}; "
        "`make demo` starts it all again",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
