"""Exports and the report's child process on a real SQLite file loaded by the saver's store."""

import csv
import io
import itertools
import sqlite3
import unicodedata

import pandas as pd
import pyarrow.parquet as pq
import pytest

from api import exports, records
from api.db import Database
from dummyjson.users import make_user
from saver import quality, report
from saver.store import Store
from tests.unit.saver.test_quality import load, users

# Cells a spreadsheet would run or split (OWASP's CSV injection payloads), and text that only
# survives a round trip when quoted: CR, LF, CRLF, quotes, commas, non-ASCII.
HOSTILE = (
    '=HYPERLINK("http://x/?leak","y")',
    "+1+2",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "a\rb",
    "a\nb",
    "a\r\nb\r",
    'say "hi", then go',
    "'=already quoted",
    "Zoë 東京 🙂 — «ok»",
    "=",
    "'",
    # A trigger after characters a spreadsheet may skip: spaces, a no-break space, a byte-order mark,
    # a zero-width space, a vertical tab (ASVS 1.2.10 also names NUL: see test_neutralised_prefixes_text_only).
    " =1+1",
    '\u00a0=HYPERLINK("http://x/")',
    "\ufeff+1",
    "\u200b@SUM(1)",
    "\x0b-1",
    "\uff1d1+1",
)
# What a spreadsheet takes for a formula (OWASP); a number is read as a number, never run.
FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n")


def runs_as_formula(cell: str) -> bool:
    """True when a spreadsheet may run ``cell``: a trigger first, or after leading spaces, control or
    invisible format characters (NUL, no-break space, byte-order mark...), full-width triggers included;
    a cell starting with the neutralising quote never runs, nor does a number."""
    if cell.startswith("'") or _number(cell):
        return False
    rest = "".join(itertools.dropwhile(lambda c: unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp"), cell))
    return cell.startswith(FORMULA) or rest.startswith(("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20"))


def hostile_users(count: int) -> list[dict]:
    """Users of the local source with a hostile value in every text field the pipeline keeps."""
    out = []
    for uid in range(1, count + 1):
        user = make_user(uid)
        h = [HOSTILE[(uid + k) % len(HOSTILE)] for k in range(11)]
        user.update(firstName=h[0], lastName=h[1], username=h[2], gender=h[3], userAgent=h[4], role=h[5])
        user["company"].update(department=h[6], title=h[7])
        user["address"].update(city=h[8], state=h[9])
        # Every other e-mail keeps a valid shape, so processed_users gets formula-starting addresses too.
        user["email"] = f"{'=+-'[uid % 3]}{uid}@x.dummyjson.com" if uid % 2 else h[10]
        out.append(user)
    return out


def text_columns(conn: sqlite3.Connection, table: records.Table) -> list[str]:
    declared = {row[1]: row[2].upper() for row in conn.execute(f"PRAGMA table_info({table.name})")}
    return [c for c in table.columns if declared.get(c, "TEXT") == "TEXT"]


def unneutralised(cell: str) -> str:
    """The stored value of a safe export's cell: one leading single quote dropped."""
    return cell[1:] if cell.startswith("'") else cell


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "data.db"
    store = Store(str(path))
    load(store, "r1", "20261125_030000", users(103))
    store.close()
    return path


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory):
    """The saver's store loaded with hostile users, then a hostile value in every text column it derives."""
    path = tmp_path_factory.mktemp("hostile") / "data.db"
    store = Store(str(path))
    load(store, "=run|x", "20261125_030000", [*hostile_users(60), *users(40)])
    store.close()
    with sqlite3.connect(path) as conn:
        for table in records.TABLES.values():
            ids = [r[0] for r in conn.execute(f"SELECT id FROM {table.name} ORDER BY id")]
            for column in text_columns(conn, table):
                # The columns the pipeline writes itself (codes, reasons, times) could hold anything too.
                for i, row_id in enumerate(ids[: len(HOSTILE)]):
                    conn.execute(f"UPDATE {table.name} SET {column} = ? WHERE id = ?", (HOSTILE[i], row_id))
    return path


@pytest.mark.parametrize("table", list(records.TABLES.values()), ids=list(records.TABLES))
def test_hostile_cells_read_back_exactly_and_never_start_a_formula(hostile_db, table):
    with sqlite3.connect(hostile_db) as conn:
        stored = conn.execute(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY id").fetchall()
        texts = text_columns(conn, table)
    assert len(stored) > len(HOSTILE) and texts
    expected = [["" if v is None else str(v) for v in row] for row in stored]
    for column in texts:  # the data is as hostile as intended: every text column holds every payload
        i = table.columns.index(column)
        assert set(HOSTILE) <= {row[i] for row in stored}, column

    def export(raw: bool) -> bytes:
        sel = exports.Selection(Database(str(hostile_db)), table, records.Query(sort="id"), chunk_rows=7)
        return b"".join(exports.csv_chunks(sel, raw))

    safe, raw = export(False), export(True)
    for data in (safe, raw):
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
        assert rows[0] == list(table.columns)
        # pandas reads the same cells as Python's csv module (no row split by a CR or LF).
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        assert frame.values.tolist() == rows[1:]
        if data is raw:
            assert rows[1:] == expected
        else:
            assert [[unneutralised(c) for c in row] for row in rows[1:]] == expected
            assert [c for row in rows[1:] for c in row if runs_as_formula(c)] == []
        # Every field quoted: the file is exactly its cells written back with every field in quotes.
        again = io.StringIO()
        csv.writer(again, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows)
        assert again.getvalue() == data.decode()


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_the_stored_value_comes_back_from_parquet_unchanged(hostile_db):
    table = records.TABLES["processed_users"]
    sel = exports.Selection(Database(str(hostile_db)), table, records.Query(sort="id"))
    data = pq.read_table(io.BytesIO(b"".join(exports.parquet_chunks(sel))))
    with sqlite3.connect(hostile_db) as conn:
        names = [r[0] for r in conn.execute("SELECT first_name FROM processed_users ORDER BY id")]
    assert data.column("first_name").to_pylist() == names and set(HOSTILE) <= set(names)


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("\t-1", "'\t-1"),
        ("'x", "''x"),
        ("a=1", "a=1"),
        ("", ""),
        (-5, -5),
        (None, None),
        ("\x00=1", "'\x00=1"),  # ASVS 1.2.10: NUL
        ("\x1f", "'\x1f"),  # any control character first, like a tab or CR
        ("  =1", "'  =1"),
        ("\u00a0\u2003@x", "'\u00a0\u2003@x"),
        ("\ufeff\u200b-1", "'\ufeff\u200b-1"),
        ("\uff0b1", "'\uff0b1"),
        (" plain", " plain"),  # a space before text that is no formula: unchanged
        ("\u00a0", "\u00a0"),
        ("Zoë", "Zoë"),
    ],
)
def test_neutralised_prefixes_text_only(value, safe):
    assert exports.neutralised(value) == safe


@pytest.mark.parametrize("chunk_rows", [1, 7, 10_000])
def test_parquet_has_a_row_group_per_chunk_and_every_row(db_path, chunk_rows):
    table = records.TABLES["raw_users"]
    sel = exports.Selection(Database(str(db_path)), table, records.Query(run_id="r1"), chunk_rows=chunk_rows)
    data = pq.ParquetFile(io.BytesIO(b"".join(exports.parquet_chunks(sel))))
    assert data.metadata.num_rows == 103
    assert data.metadata.num_row_groups == -(-103 // chunk_rows)
    assert data.read().column("user_id").to_pylist()[:3] == [1, 2, 3]


def test_csv_is_the_same_whatever_the_chunk_size(db_path):
    table = records.TABLES["invalid_users"]

    def text(chunk_rows: int) -> str:
        sel = exports.Selection(Database(str(db_path)), table, records.Query(run_id="r1"), chunk_rows=chunk_rows)
        return b"".join(exports.csv_chunks(sel)).decode()

    assert text(3) == text(10_000)
    rows = list(csv.DictReader(io.StringIO(text(3))))
    assert len(rows) == 103 // 4 and tuple(rows[0]) == table.columns


def test_limit_and_offset_cut_the_selection(db_path):
    table = records.TABLES["processed_users"]
    query = records.Query(run_id="r1", sort="age", descending=True, offset=5)
    sel = exports.Selection(Database(str(db_path)), table, query, limit=10, chunk_rows=4)
    rows = list(csv.DictReader(io.StringIO(b"".join(exports.csv_chunks(sel)).decode())))
    ages = [float(r["age"]) for r in rows]
    assert len(rows) == 10 and ages == sorted(ages, reverse=True)


@pytest.mark.parametrize(
    ("name", "run_id", "expected"),
    [("raw_users", None, "raw_users.csv"), ("raw_users", 'a/../"b', "raw_users_ab.csv")],
)
def test_file_names_are_safe(name, run_id, expected):
    assert exports.filename(records.TABLES[name], records.Query(run_id=run_id), "csv") == expected


def test_the_child_process_gives_the_same_report(db_path):
    assert report.compute(str(db_path), "r1") == quality.compute(db_path, "r1")


def test_a_failing_child_is_one_clear_error(db_path):
    with pytest.raises(report.ReportFailed, match="no run 'nope'"):
        report.compute(str(db_path), "nope")


def test_a_hung_child_times_out(tmp_path, monkeypatch):
    """A child that never answers is stopped at the time limit (here: a script that sleeps)."""
    (tmp_path / "saver").mkdir()
    (tmp_path / "saver" / "__init__.py").write_text("")
    (tmp_path / "saver" / "quality.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(report, "_PACKAGES", str(tmp_path))
    with pytest.raises(report.ReportFailed, match="took over"):
        report.compute("x.db", "r1", timeout_s=1)
