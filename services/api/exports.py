"""Exports of a table's selection as CSV (pandas) or Parquet (pyarrow), streamed chunk by chunk.

Only the typed columns are exported (``records.Table.columns``): never ``record`` or ``raw_line``,
which hold masked secrets and unparsed text. One cursor reads the selection in chunks of
``CHUNK_ROWS`` rows, so memory stays flat whatever the size; it is one read snapshot, held for
as long as the client takes to download (the saver's WAL is checkpointed once it ends).
"""

import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from api.db import Database
from api.records import Query, Table, select

CHUNK_ROWS = 5_000
_ARROW = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string()}
_PANDAS = {"INTEGER": "Int64", "REAL": "Float64", "TEXT": "string"}

FORMATS = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


class Selection:
    """An open cursor over a selection's typed columns and the columns' SQLite types."""

    def __init__(self, db: Database, table: Table, query: Query, limit: int | None = None) -> None:
        conn = db.connect()  # its own connection: the chunks are read from the server's threads in turn
        try:
            declared = {row[1]: row[2].upper() for row in conn.execute(f"PRAGMA table_info({table.name})")}
            self.types = {c: declared.get(c, "TEXT") for c in table.columns}
            sql, args = select(table, query, table.columns, limit)
            self.cursor = conn.execute(sql, args)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def chunks(self) -> Iterator[pd.DataFrame]:
        """DataFrames of at most CHUNK_ROWS rows with nullable typed columns; closes the cursor at the end."""
        try:
            names = list(self.types)
            dtypes = {c: _PANDAS[t] for c, t in self.types.items() if t in _PANDAS}
            while rows := self.cursor.fetchmany(CHUNK_ROWS):
                yield pd.DataFrame.from_records(rows, columns=names).astype(dtypes)
        finally:
            self.conn.close()


def csv_chunks(selection: Selection) -> Iterator[bytes]:
    """The selection as CSV (a header line, then one line per row; NULL is an empty field)."""
    header = True
    for df in selection.chunks():
        yield df.to_csv(index=False, header=header, lineterminator="\n").encode()
        header = False
    if header:  # no rows: the header alone
        yield (",".join(selection.types) + "\n").encode()


class _Chunks:
    """A write-only file for ParquetWriter that hands over what was written since the last ``take``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.parts.append(b)
        self.position += len(b)
        return len(b)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def parquet_chunks(selection: Selection) -> Iterator[bytes]:
    """The selection as one Parquet file, a row group per chunk, bytes handed over as each group is written."""
    schema = pa.schema([(c, _ARROW.get(t, pa.string())) for c, t in selection.types.items()])
    sink = _Chunks()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for df in selection.chunks():
            writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
            yield sink.take()
    yield sink.take()  # the footer, written on close


def filename(table: Table, query: Query, fmt: str) -> str:
    """``processed_users_<run_id>.csv``, with anything but letters, digits, ``_`` and ``-`` dropped."""
    run = re.sub(r"[^A-Za-z0-9_-]", "", query.run_id or "")[:64]
    return f"{table.name}{'_' + run if run else ''}.{fmt}"
