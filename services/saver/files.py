"""Writes a run's three .jsonl files by streaming rows out of the database (bounded memory)."""

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson

# kind -> (file-name key, query yielding one JSON line per row in load order)
_QUERIES = {
    "raw": ("raw_file", "SELECT record FROM raw_users WHERE run_id=? ORDER BY page, position"),
    "processed": ("processed_file", "SELECT record FROM processed_users WHERE run_id=? ORDER BY page, position"),
    "dlq": (
        "dlq_file",
        "SELECT record, raw_line, error_reason FROM invalid_users WHERE run_id=? ORDER BY page, position",
    ),
}


def _dlq_line(row: sqlite3.Row) -> bytes:
    record, raw_line, reason = row
    if record is not None:
        obj: dict[str, Any] = orjson.loads(record)
        obj["error_reason"] = reason
    else:
        obj = {"raw_line": raw_line, "error_reason": reason}
    return orjson.dumps(obj)


def write_run_files(conn: sqlite3.Connection, run: sqlite3.Row, data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Write the raw, processed and dlq files of ``run``; kind -> {path, name, bytes, sha256, records}."""
    out = {}
    for kind, (name_key, query) in _QUERIES.items():
        name = run[name_key]
        path = Path(data_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        digest, size, count = hashlib.sha256(), 0, 0
        with tmp.open("wb") as fh:
            for row in conn.execute(query, (run["run_id"],)):
                line = (_dlq_line(row) if kind == "dlq" else row[0].encode()) + b"\n"
                fh.write(line)
                digest.update(line)
                size += len(line)
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        out[kind] = {"path": path, "name": name, "bytes": size, "sha256": digest.hexdigest(),
                     "records": count, "encrypted": False}
    return out
