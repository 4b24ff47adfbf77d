"""SQLite connections: the single writer (WAL, busy timeout, foreign keys) and read-only readers."""

import sqlite3
from pathlib import Path


def connect_writer(path: str | Path) -> sqlite3.Connection:
    """The saver's connection: autocommit mode so transactions are explicit (BEGIN IMMEDIATE)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    return conn


def connect_reader(path: str | Path) -> sqlite3.Connection:
    """A read-only connection (mode=ro and query_only) that never blocks the writer under WAL."""
    uri = f"file:{Path(path).resolve()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.row_factory = sqlite3.Row
    return conn
