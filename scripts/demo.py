"""`make demo`: starts Redis, an SFTP server, the source and the four services locally, performs one run, reports it."""

import argparse
import os
import secrets
import signal
import sqlite3
import sys
import time
from pathlib import Path

import httpx

import testbed as tb

ROOT = tb.ROOT
RUN = ROOT / ".run"


def wait_run(db: Path, timeout_s: float) -> sqlite3.Row | None:
    """The newest run once it has finished; after ``timeout_s`` the newest row as it stands (None if none)."""
    try:
        return tb.wait_for_run(db, timeout_s=timeout_s, step_s=0.2)
    except TimeoutError:
        return tb.latest_run(db)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop everything after the summary")
    parser.add_argument("--users", type=int, default=208, help="users served by the local source")
    args = parser.parse_args()
    procs: list[tb.Proc] = []
    logs = RUN / "logs"

    def stop_all(*_: object) -> None:
        for p in reversed(procs):
            p.stop()

    try:
        redis = tb.start_redis(RUN / "redis", aof=True)
        procs.append(redis.proc)
        sftp = tb.start_sftp(RUN / "sshd", RUN / "ssh_keys", ROOT / "sftp_data")
        procs.append(sftp.proc)
        source_url = os.environ.get("ETL_SOURCE_URL")
        if not source_url:
            port = tb.free_port()
            procs.append(
                tb.spawn(
                    "source", [tb.PYTHON, "-m", "dummyjson", "--port", str(port), "--count", str(args.users)], logs
                )
            )
            tb.wait_port(port, proc=procs[-1].popen)
            source_url = f"http://127.0.0.1:{port}/users"
        token = os.environ.get("ETL_API_TOKEN") or secrets.token_urlsafe(24)
        api_port = int(os.environ.get("ETL_API_PORT", "8000"))
        env = {
            "ETL_REDIS_URL": redis.url,
            "ETL_SOURCE_URL": source_url,
            "ETL_DB_PATH": str(ROOT / "database" / "data.db"),
            "ETL_DATA_DIR": str(ROOT / "data"),
            "ETL_API_TOKEN": token,
            "ETL_API_PORT": str(api_port),
            "ETL_API_AUTH": "token",
            **sftp.env(),
        }
        env.update({k: v for k, v in os.environ.items() if k.startswith("ETL_") and k not in env})
        for name in ("transformer", "saver", "api"):
            procs.append(tb.start_service(name, env, logs))
        tb.wait_port(api_port, proc=procs[-1].popen)
        print(f"services up; logs in {logs}; extracting from {source_url}", flush=True)
        t0 = time.monotonic()
        extract = tb.start_service("extractor", env, logs, "once")
        code = extract.popen.wait()
        if code != 0:
            print(f"extraction failed (exit {code}):\n{extract.output()[-2000:]}", file=sys.stderr)
            return 1
        run = wait_run(ROOT / "database" / "data.db", 120)
        if run is None or run["status"] != "succeeded":
            reason = (run["error"] if run is not None else None) or "the run did not finish in time"
            run_id, status = (run["run_id"], run["status"]) if run is not None else ("?", "missing")
            print(f"run {run_id} is {status}: {reason}", file=sys.stderr)
            return 1
        api = f"http://127.0.0.1:{api_port}"
        runs = httpx.get(f"{api}/etl_runs", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        print(
            f"\nrun {run['run_id']} {run['status']} in {time.monotonic() - t0:.2f}s\n"
            f"  records: {run['raw_count']} fetched, {run['valid_count']} valid, {run['invalid_count']} invalid\n"
            f"  database: {ROOT / 'database' / 'data.db'}\n"
            f"  files in sftp_data/: {run['raw_file']}, {run['processed_file']}, {run['dlq_file']}\n"
            f"  API: {api}/etl_runs ({len(runs)} run(s)), docs at {api}/docs\n"
            f"  token: Authorization: Bearer {token}",
            flush=True,
        )
        if args.once:
            return 0
        procs.append(tb.start_service("extractor", env, logs))
        print("serving until Ctrl-C (the extractor also runs on its daily schedule)", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.alive() for p in procs):
            time.sleep(1)
        dead = [p.name for p in procs if not p.alive()]
        print(f"stopped: {', '.join(dead)} exited; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
