"""Writes a run's three .jsonl files, streamed out of the database (bounded memory), optionally age-encrypted."""

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import orjson

from saver import crypto
from saver.agefmt import x25519

# kind -> (file-name key, query yielding one JSON line per row in load order)
_QUERIES = {
    "raw": ("raw_file", "SELECT record FROM raw_users WHERE run_id=? ORDER BY page, position"),
    "processed": ("processed_file", "SELECT record FROM processed_users WHERE run_id=? ORDER BY page, position"),
    "dlq": (
        "dlq_file",
        "SELECT record, raw_line, error_reason FROM invalid_users WHERE run_id=? ORDER BY page, position",
    ),
}


class RunFile(TypedDict):
    """One written file of a run, as ``write_run_files`` returns it."""

    path: Path  # where it was written, under the data directory
    name: str  # relative name, ``.age`` appended when encrypted (the SFTP path under the remote folder)
    bytes: int  # size as written (the ciphertext when encrypted)
    sha256: str  # hex digest of the bytes as written
    records: int  # JSON lines in the plaintext
    encrypted: bool


def _invalid_line(row: sqlite3.Row) -> bytes:
    record, raw_line, reason = row
    if record is not None:
        obj: dict[str, Any] = orjson.loads(record)
        obj["error_reason"] = reason
    else:
        obj = {"raw_line": raw_line, "error_reason": reason}
    return orjson.dumps(obj)


def _lines(conn: sqlite3.Connection, kind: str, query: str, run_id: str, counter: list[int]) -> Iterator[bytes]:
    for row in conn.execute(query, (run_id,)):
        counter[0] += 1
        yield (_invalid_line(row) if kind == "dlq" else row[0].encode()) + b"\n"


def write_run_files(
    conn: sqlite3.Connection, run: sqlite3.Row, data_dir: str | Path, recipients: list[x25519.Recipient] | None = None
) -> dict[str, RunFile]:
    """Write the raw, processed and invalid-records files of ``run`` (its ``etl_runs`` row).

    Returns kind (``raw``, ``processed``, ``dlq``) -> ``RunFile``.
    With ``recipients`` the rows stream straight into age encryption: the file is ``<name>.age`` and no
    plaintext copy touches the disk. ``bytes`` and ``sha256`` always describe the file as written (and uploaded).
    """
    out: dict[str, RunFile] = {}
    for kind, (name_key, query) in _QUERIES.items():
        plain_name = run[name_key]
        name = plain_name + crypto.SUFFIX if recipients else plain_name
        path = Path(data_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        counter = [0]
        lines = _lines(conn, kind, query, run["run_id"], counter)
        with tmp.open("wb") as fh:
            if recipients:
                size, sha256 = crypto.encrypt_chunks(lines, fh, recipients)
            else:
                digest, size = hashlib.sha256(), 0
                for line in lines:
                    fh.write(line)
                    digest.update(line)
                    size += len(line)
                sha256 = digest.hexdigest()
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        # A copy left by an earlier write in the other mode must not linger (plaintext beside its .age).
        other = Path(data_dir) / (plain_name if recipients else plain_name + crypto.SUFFIX)
        other.unlink(missing_ok=True)
        out[kind] = {
            "path": path,
            "name": name,
            "bytes": size,
            "sha256": sha256,
            "records": counter[0],
            "encrypted": bool(recipients),
        }
    return out
