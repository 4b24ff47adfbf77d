"""Writes a run's three .jsonl files, streamed out of the database (bounded memory), optionally age-encrypted."""

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import orjson
import structlog

from saver import crypto
from saver.agefmt import x25519

log = structlog.get_logger(__name__)

# kind -> (file-name key, query yielding one JSON line per row in load order)
_QUERIES = {
    "raw": ("raw_file", "SELECT record FROM raw_users WHERE run_id=? ORDER BY page, position"),
    # The view gives each processed record back from its raw row (migration 0008).
    "processed": ("processed_file", "SELECT record FROM processed_records WHERE run_id=? ORDER BY page, position"),
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


def invalid_line(row: sqlite3.Row | tuple[str | None, str | None, str]) -> bytes:
    """The dlq file's line (no new line) of an ``invalid_users`` row's (record, raw_line, error_reason)."""
    record, raw_line, reason = row
    if record is not None:
        obj: dict[str, Any] = orjson.loads(record)
        obj["error_reason"] = reason
    else:
        obj = {"raw_line": raw_line, "error_reason": reason}
    return orjson.dumps(obj)


def _lines(conn: sqlite3.Connection, kind: str, query: str, run_id: str, counter: list[int]) -> Iterator[bytes]:
    # sqlite3's cursor reads rows as they are iterated; on PostgreSQL the adapter's stream does (saver.pgconn),
    # where a plain execute would hold the run's whole table in memory.
    stream = getattr(conn, "stream", None)
    for row in stream(query, (run_id,)) if stream is not None else conn.execute(query, (run_id,)):
        counter[0] += 1
        yield (invalid_line(row) if kind == "dlq" else row[0].encode()) + b"\n"


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
        try:
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
        except BaseException:
            tmp.unlink(missing_ok=True)  # a half-written file (a full disk, a bug) must not stay behind
            raise
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


KINDS = ("raw", "processed", "dlq")
# One append: (run_id, kind, file name, start offset, bytes), as the upload stream takes it (StreamingUpload.send).
Appended = tuple[str, str, str, int, bytes]


class LoadingFiles:
    """The three plaintext files of each run appended as its pages commit, so the end of a run only renames them.

    ``append`` runs inside the page's SQLite transaction and records each file's length and line count there
    (table ``loading_files``); before every append a file is cut back to its recorded length, so bytes written by a
    transaction that then rolled back (or by a saver killed before its commit) are dropped. The files keep the
    tables' order (page, then position) only while pages commit in page order; a page that comes out of order
    stops the appending for its run, and ``finish`` then returns None: the files are written from the tables.
    The sha256 of each file is kept in memory as pages commit; after a restart ``finish`` reads the file instead.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        # (run_id, kind) -> (sha256 of the file's first n bytes, n); updated only after the commit.
        self._digests: dict[tuple[str, str], tuple[Any, int]] = {}
        self._pending: list[Appended] = []

    def path(self, run_id: str, name: str) -> Path:
        """Where the file of ``name`` grows while the run loads (the run id keeps two runs of one second apart)."""
        return self.data_dir / f"{name}.{run_id}.loading"

    def append(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        names: dict[str, str],
        page: int,
        lines: dict[str, tuple[bytes, int]],
    ) -> None:
        """Append ``page``'s lines inside the open transaction: kind -> (the lines, each ending in a new line, in
        position order; how many).

        Never raises for the files: a page out of order, a file shorter than recorded or a write error stops the
        appending for the run (its files are then written from the tables at the end).
        """
        row = conn.execute("SELECT * FROM loading_files WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO loading_files (run_id, next_page) VALUES (?, ?)", (run_id, 0 if page == 0 else -1)
            )
            if page != 0:
                return
            row = {"next_page": 0, **{f"{k}_{m}": 0 for k in KINDS for m in ("bytes", "records")}}
        if row["next_page"] != page:
            if row["next_page"] != -1:
                conn.execute("UPDATE loading_files SET next_page=-1 WHERE run_id=?", (run_id,))
            return
        sizes, pending = [], []
        try:
            for kind in KINDS:
                path, recorded = self.path(run_id, names[f"{kind}_file"]), row[f"{kind}_bytes"]
                data = lines[kind][0]
                if not recorded:  # the file's first bytes: its folder may be missing
                    path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "r+b" if recorded else "wb") as fh:
                    end = fh.seek(0, os.SEEK_END)
                    if end < recorded:
                        raise OSError(f"{path} is shorter than its recorded {recorded} bytes")
                    if end > recorded:  # bytes of a transaction that rolled back: cut them off
                        fh.truncate(recorded)
                        fh.seek(recorded)
                    fh.write(data)
                sizes.append(len(data))
                pending.append((run_id, kind, names[f"{kind}_file"], recorded, data))
        except OSError as exc:
            log.warning("run files cannot be appended; they will be written at the end", run_id=run_id, error=str(exc))
            conn.execute("UPDATE loading_files SET next_page=-1 WHERE run_id=?", (run_id,))
            return
        self._pending += pending
        conn.execute(
            "UPDATE loading_files SET next_page=?, raw_bytes=raw_bytes+?, raw_records=raw_records+?, "
            "processed_bytes=processed_bytes+?, processed_records=processed_records+?, dlq_bytes=dlq_bytes+?, "
            "dlq_records=dlq_records+? WHERE run_id=?",
            (
                page + 1,
                sizes[0],
                lines["raw"][1],
                sizes[1],
                lines["processed"][1],
                sizes[2],
                lines["dlq"][1],
                run_id,
            ),
        )

    def discard(self, run: sqlite3.Row) -> None:
        """Remove what was appended for ``run`` (its files are being written from the tables instead)."""
        for kind in KINDS:
            self.path(run["run_id"], run[f"{kind}_file"]).unlink(missing_ok=True)
            self._digests.pop((run["run_id"], kind), None)

    def committed(self, ok: bool) -> list[Appended]:
        """The transaction of the appends since the last call committed (``ok``) or rolled back; the appends kept."""
        pending, self._pending = self._pending, []
        kept = pending if ok else []
        for run_id, kind, _, start, data in kept:
            digest, n = self._digests.get((run_id, kind), (None, -1))
            if start == 0:
                digest, n = hashlib.sha256(), 0
            if digest is None or n != start:
                self._digests.pop((run_id, kind), None)  # lost track (a restart): finish reads the file
                continue
            digest.update(data)
            self._digests[(run_id, kind)] = (digest, n + len(data))
        return kept

    def finish(self, conn: sqlite3.Connection, run: sqlite3.Row) -> dict[str, RunFile] | None:
        """Move the run's appended files to their names; the same result as ``write_run_files``, or None.

        None when the files were not appended whole and in order (a page out of order or loaded before this
        table existed, counts that differ from the run's): the caller writes them from the tables.
        """
        run_id = run["run_id"]
        row = conn.execute("SELECT * FROM loading_files WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        expected = {"raw": run["raw_count"], "processed": run["valid_count"], "dlq": run["invalid_count"]}
        if row["next_page"] != run["pages_expected"] or any(row[f"{k}_records"] != n for k, n in expected.items()):
            return None
        out: dict[str, RunFile] = {}
        sources: dict[str, Path] = {}
        for kind in KINDS:
            name, recorded = run[f"{kind}_file"], row[f"{kind}_bytes"]
            src, path = self.path(run_id, name), self.data_dir / name
            try:
                with open(src, "r+b") as fh:
                    if fh.seek(0, os.SEEK_END) < recorded:
                        return None
                    fh.truncate(recorded)
                    os.fsync(fh.fileno())
            except FileNotFoundError:
                return None
            digest, n = self._digests.get((run_id, kind), (None, -1))
            if digest is None or n != recorded:
                digest = hashlib.sha256()
                with open(src, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            sources[kind] = src
            out[kind] = {
                "path": path,
                "name": name,
                "bytes": recorded,
                "sha256": digest.hexdigest(),
                "records": row[f"{kind}_records"],
                "encrypted": False,
            }
        for kind, info in out.items():
            sources[kind].replace(info["path"])
            # A copy left by an earlier write in encrypted mode must not linger beside the plaintext.
            (self.data_dir / (info["name"] + crypto.SUFFIX)).unlink(missing_ok=True)
        for kind in KINDS:
            self._digests.pop((run_id, kind), None)
        return out
