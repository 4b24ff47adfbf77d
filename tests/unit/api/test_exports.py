"""Exports and the report's child process on a real SQLite file loaded by the saver's store."""

import csv
import io

import pyarrow.parquet as pq
import pytest

from api import exports, records
from api.db import Database
from saver import quality, report
from saver.store import Store
from tests.unit.saver.test_quality import load, users


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "data.db"
    store = Store(str(path))
    load(store, "r1", "20261125_030000", users(103))
    store.close()
    return path


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
