"""Exports of a table's selection as CSV or Parquet (pyarrow), streamed chunk by chunk.

Only the typed columns are exported (``records.Table.columns``): never ``record`` or ``raw_line``,
which hold masked secrets and unparsed text. CSV is made for spreadsheets by default: every field
quoted, and a text cell that a spreadsheet would read as a formula neutralised (``SAFE``); ``raw``
leaves the values as they are for programs. One cursor reads the selection in chunks of
``CHUNK_ROWS`` rows, so memory stays flat whatever the size; it is one read snapshot, held for
as long as the client takes to download (the saver's WAL is checkpointed once it ends; on PostgreSQL
a server-side cursor in one read-only transaction).
"""

import csv
import io
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from api.db import Database
from api.records import Query, Table, select

CHUNK_ROWS = 5_000
# OWASP's CSV injection guidance: a cell starting with one of these is read as a formula by Excel or
# LibreOffice (= + - @, and tab or CR/LF before one); such a cell gets a leading single quote, which
# spreadsheets show and never evaluate. A cell already starting with the quote gets one more, so
# dropping one leading quote from every quoted cell always gives the stored value back. The full-width
# forms are there as a precaution: spreadsheets with East Asian input settings read them as the ASCII ones.
TRIGGERS = frozenset("=+-@'\uff1d\uff0b\uff0d\uff20")
# What a spreadsheet or an import step may skip before reading a formula: spaces (no-break ones too),
# line and paragraph separators, and invisible format characters (byte-order mark, zero-width space).
_SKIPPED = frozenset(("Zs", "Zl", "Zp", "Cf"))
FORMATS = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


class Selection:
    """An open cursor over a selection's typed columns and the columns' SQLite types."""

    def __init__(
        self, db: Database, table: Table, query: Query, limit: int | None = None, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        self.chunk_rows = chunk_rows
        declared = db.column_types(db.conn(), table.name)
        self.types = {c: declared.get(c, "TEXT") for c in table.columns}
        sql, args = select(table, query, table.columns, limit, db.dialect)
        # Its own connection: the chunks are read from the server's threads in turn.
        self._rows = db.stream(sql, args, chunk_rows)

    def chunks(self) -> Iterator[list[tuple[Any, ...]]]:
        """Lists of at most ``chunk_rows`` rows; closes the connection at the end (or when dropped)."""
        yield from self._rows


def neutralised(value: Any) -> Any:
    """``value`` with a single quote in front when it is text a spreadsheet might take for a formula.

    That is text whose first character is a trigger or any control character (tab, CR, LF, NUL...: ASVS
    1.2.10), or whose first character after leading spaces and invisible characters is a trigger.
    """
    if not isinstance(value, str) or not value or value[0].isalnum():
        return value  # the common case, decided by the first character alone
    for i, char in enumerate(value):
        if char in TRIGGERS or (i == 0 and unicodedata.category(char) == "Cc"):
            return "'" + value
        if unicodedata.category(char) not in _SKIPPED:
            return value
    return value


def csv_chunks(selection: Selection, raw: bool = False) -> Iterator[bytes]:
    """The selection as CSV: a header line, then one line per row, every field quoted; NULL is an empty field.

    Quoting every field keeps a CR, LF or quote inside a value in its field for any reader; unless
    ``raw``, text cells are ``neutralised``.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(selection.types)
    for rows in selection.chunks():
        writer.writerows(rows if raw else ([neutralised(v) for v in row] for row in rows))
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():  # no rows: the header alone
        yield out.getvalue().encode()


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
    # Imported on first use: pyarrow adds ~105 MB to a process once it has built an array (a fixed
    # cost, the same at any export size), which only Parquet exports need.
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The C allocator gives freed chunks back; pyarrow's default (mimalloc) kept ~17 MB more at the
    # peak of a 100,000-row export (measured). Buffers here are small and short-lived.
    pa.set_memory_pool(pa.system_memory_pool())

    arrow = {"INTEGER": pa.int64(), "REAL": pa.float64()}
    schema = pa.schema([(c, arrow.get(t, pa.string())) for c, t in selection.types.items()])
    sink = _Chunks()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for rows in selection.chunks():
            columns = zip(*rows, strict=True)
            arrays = [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            yield sink.take()
    yield sink.take()  # the footer, written on close


def filename(table: Table, query: Query, fmt: str) -> str:
    """``processed_users_<run_id>.csv``, with anything but letters, digits, ``_`` and ``-`` dropped."""
    run = re.sub(r"[^A-Za-z0-9_-]", "", query.run_id or "")[:64]
    return f"{table.name}{'_' + run if run else ''}.{fmt}"
