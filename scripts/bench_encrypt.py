"""Benchmark: peak memory and speed of the saver's age encryption on a large file and on a large run in SQLite.

    .venv/bin/python scripts/bench_encrypt.py [--size-mb 1024] [--mode file|db|both] [--dir DIR]

Each measurement runs in its own subprocess; its peak RSS comes from wait4(), so nothing the parent
holds is counted. A baseline child that only imports the saver shows the interpreter's own share.
The output is decrypted again and compared by sha256, so a fast but wrong result cannot pass.
"""

import argparse
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from etl_common.db import connect_reader

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MB = 100

CHILD = {
    "baseline": "import saver.crypto, saver.files",
    "file": (
        "import sys; from saver import crypto\n"
        "crypto.encrypt_file(sys.argv[1], sys.argv[2], crypto.parse_recipients(sys.argv[3]))"
    ),
    "db": (
        "import sys, sqlite3; from saver import crypto; from saver.files import write_run_files\n"
        "conn = sqlite3.connect(sys.argv[1]); conn.row_factory = sqlite3.Row\n"
        "run = conn.execute('SELECT * FROM etl_runs').fetchone()\n"
        "write_run_files(conn, run, sys.argv[2], crypto.parse_recipients(sys.argv[3]))"
    ),
}


def measure(mode: str, *args: str) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a child running CHILD[mode]."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", CHILD[mode], *args], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} child failed with {proc.returncode}")
    return usage.ru_maxrss / 1024, time.monotonic() - t0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_file(path: Path, size_mb: int) -> None:
    line = b'{"id": 1, "firstName": "Emily", "email": "emily@x.dummyjson.com", "pad": "' + b"x" * 1500 + b'"}\n'
    with path.open("wb") as fh:
        for _ in range(size_mb * (1 << 20) // len(line)):
            fh.write(line)


def make_db(path: Path, size_mb: int) -> None:
    """A run whose processed records add up to ``size_mb``, through the saver's own migrations."""
    from saver.store import Store

    Store(str(path)).close()
    record = '{"id": %d, "firstName": "Emily", "email": "emily@x.dummyjson.com", "pad": "' + "x" * 1500 + '"}'
    rows = size_mb * (1 << 20) // (len(record) + 1)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO etl_runs (run_id, run_timestamp, raw_file, processed_file, dlq_file, status) VALUES ('bench', "
        "'2026-01-01T00:00:00Z', 'raw_users/r.jsonl', 'processed_users/p.jsonl', 'dlq/d.jsonl', 'loaded')"
    )
    batch = 10_000
    for start in range(0, rows, batch):
        conn.executemany(
            "INSERT INTO processed_users (run_id, page, position, inserted_at, record) VALUES ('bench', ?, ?, '', ?)",
            [(i // 100, i % 100, record % i) for i in range(start, min(start + batch, rows))],
        )
        conn.commit()
    conn.close()


def _rows_sha(db: Path) -> str:
    """sha256 of the processed file as it must read once decrypted: one record per line, in load order."""
    digest = hashlib.sha256()
    with closing(connect_reader(db)) as conn:
        for (record,) in conn.execute("SELECT record FROM processed_users ORDER BY page, position"):
            digest.update(record.encode() + b"\n")
    return digest.hexdigest()


def check(ciphertext: Path, identity: Path, expected_sha: str, work: Path) -> None:
    out = work / "decrypted"
    done = subprocess.run(
        [sys.executable, "-m", "saver", "decrypt", "-i", str(identity), str(ciphertext), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or sha256_of(out) != expected_sha:
        raise SystemExit(f"round trip failed: {done.stderr}")
    out.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--mode", choices=["file", "db", "both"], default="both")
    parser.add_argument("--dir", default=None, help="scratch folder (needs about 3x the size free)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-encrypt-", dir=args.dir))
    try:
        identity = work / "identity.txt"
        public = subprocess.run(
            [sys.executable, "-m", "saver", "keygen", "-o", str(identity)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        base_mb, _ = measure("baseline")
        print(f"baseline (interpreter + saver imports): peak RSS {base_mb:.1f} MB")
        worst = 0.0
        if args.mode in ("file", "both"):
            plain = work / "plain.jsonl"
            make_file(plain, args.size_mb)
            size = plain.stat().st_size
            peak, secs = measure("file", str(plain), str(work / "plain.jsonl.age"), public)
            print(
                f"encrypt_file  {size / 2**20:8.0f} MB: peak RSS {peak:6.1f} MB, {secs:6.2f} s, "
                f"{size / 2**20 / secs:6.0f} MB/s"
            )
            check(work / "plain.jsonl.age", identity, sha256_of(plain), work)
            plain.unlink()
            (work / "plain.jsonl.age").unlink()
            worst = max(worst, peak)
        if args.mode in ("db", "both"):
            db = work / "data.db"
            t0 = time.monotonic()
            make_db(db, args.size_mb)
            print(f"(built a {db.stat().st_size / 2**20:.0f} MB database in {time.monotonic() - t0:.1f} s)")
            peak, secs = measure("db", str(db), str(work / "files"), public)
            out = work / "files" / "processed_users" / "p.jsonl.age"
            size = out.stat().st_size
            print(
                f"SQLite -> age {size / 2**20:8.0f} MB: peak RSS {peak:6.1f} MB, {secs:6.2f} s, "
                f"{size / 2**20 / secs:6.0f} MB/s (write_run_files, rows streamed into the encryptor)"
            )
            check(out, identity, _rows_sha(db), work)
            worst = max(worst, peak)
        verdict = "under" if worst < LIMIT_MB else "OVER"
        print(f"peak RSS {worst:.1f} MB: {verdict} the {LIMIT_MB} MB budget")
        return 0 if worst < LIMIT_MB else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
