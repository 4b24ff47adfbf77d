"""Helpers of the security tests: an SFTP server whose client key has a passphrase, age keys, file contents."""

import secrets
import subprocess
from pathlib import Path

import orjson

import testbed as tb
from tests.support import Pipeline


def saver_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m saver ...`` as the operator runs it."""
    return subprocess.run([tb.PYTHON, "-m", "saver", *args], capture_output=True, text=True, cwd=tb.ROOT, timeout=60)


def age_keygen(path: Path) -> str:
    done = saver_cli("keygen", "-o", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_locked_sftp(base: Path) -> tuple[tb.Sftp, str]:
    """Our own OpenSSH server whose (ed25519) client key is protected by a random passphrase."""
    passphrase = "pp-" + secrets.token_urlsafe(18)
    server = tb.start_sftp(base / "sshd", base / "keys", base / "upload", passphrase=passphrase)
    return server, passphrase


def sftp_env(server: tb.Sftp, **extra: str) -> dict[str, str]:
    """The saver's SFTP settings for ``server``, leaving the pipeline's own upload folder in place."""
    env = {k: v for k, v in server.env().items() if k != "ETL_SFTP_REMOTE_DIR"}
    return {**env, **extra}


def table_lines(p: Pipeline, run_id: str, kind: str) -> list[dict]:
    """The content a run's file must have, read back from the tables (the system of record)."""
    with p.db() as db:
        if kind == "dlq":
            out = []
            for r in db.execute(
                "SELECT record, raw_line, error_reason FROM invalid_users WHERE run_id=? ORDER BY page, position",
                (run_id,),
            ):
                base = orjson.loads(r["record"]) if r["record"] is not None else {"raw_line": r["raw_line"]}
                out.append({**base, "error_reason": r["error_reason"]})
            return out
        table = {"raw": "raw_users", "processed": "processed_records"}[kind]  # the view: migration 0008
        return [
            orjson.loads(r[0])
            for r in db.execute(f"SELECT record FROM {table} WHERE run_id=? ORDER BY page, position", (run_id,))
        ]


def parse_lines(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines() if line]
