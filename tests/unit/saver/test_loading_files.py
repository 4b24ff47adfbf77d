"""The run files appended while pages load: equal to the files written from the tables, whatever the delivery."""

import hashlib
import sqlite3
from pathlib import Path

import pytest

from dummyjson.users import make_bad_user, make_user
from saver import loader
from saver.files import KINDS, LoadingFiles, write_run_files
from saver.store import Store
from saver.stream import StreamingUpload
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN_TS = "20261125_030000"
DEPARTMENTS = load_departments()


class Loading(Store):
    """A store whose pages are loaded with their files appended (and streamed), composed as the saver's worker does."""

    def __init__(self, path: str, data_dir: str, stream: StreamingUpload | None = None) -> None:
        super().__init__(path)
        self.files, self.stream = LoadingFiles(data_dir), stream

    def load_pages(self, pages):
        return loader.load_pages(self, pages, self.files, self.stream)


def _page(run_id: str, page: int, size: int = 5, run_ts: str = RUN_TS) -> dict:
    """A transformed page with valid users, an invalid one and a record that is not an object."""
    base = page * size
    records = [make_user(base + i) if i % 3 else make_bad_user(base + i, i) for i in range(size - 1)]
    records.append("not an object" if page % 2 else make_user(base + size))
    return {"run_id": run_id, "run_ts": run_ts, "page": page, **transform_page(records, DEPARTMENTS)}


def _complete(store: Store, run_id: str, pages: int) -> sqlite3.Row:
    store.apply_event({"type": "phase1_complete", "run_id": run_id, "run_ts": RUN_TS, "pages": pages, "records": 1})
    assert run_id in store.complete_runs()
    run = store.run(run_id)
    assert run is not None
    return run


def _from_tables(store: Store, run: sqlite3.Row, where: Path) -> dict[str, bytes]:
    """The three files as the end of a run wrote them before (and still does when appending is not possible)."""
    written = write_run_files(store.conn, run, where)
    return {kind: info["path"].read_bytes() for kind, info in written.items()}


def _check_equal(written: dict, expected: dict[str, bytes], data_dir: Path, run_id: str = "r1") -> None:
    for kind in KINDS:
        data = written[kind]["path"].read_bytes()
        assert data == expected[kind], kind
        assert written[kind]["path"] == data_dir / written[kind]["name"]
        assert written[kind]["bytes"] == len(data)
        assert written[kind]["sha256"] == hashlib.sha256(data).hexdigest()
        assert written[kind]["records"] == data.count(b"\n")
        assert not written[kind]["encrypted"]
        assert not (data_dir / f"{written[kind]['name']}.{run_id}.loading").exists()


def test_pages_loaded_in_order_give_the_files_of_the_tables(tmp_path):
    store = Loading(str(tmp_path / "data.db"), str(tmp_path / "data"))
    # Batches of two pages given out of order within the batch: the store loads them in page order.
    assert store.load_pages([_page("r1", 1), _page("r1", 0)]) == [("r1", 0), ("r1", 1)]
    assert store.load_pages([_page("r1", 1)]) == []  # a page delivered twice adds nothing
    assert store.load_pages([_page("r1", 2), _page("r1", 3)]) == [("r1", 2), ("r1", 3)]
    run = _complete(store, "r1", 4)
    expected = _from_tables(store, run, tmp_path / "expected")
    assert expected["dlq"].count(b"\n") == run["invalid_count"] > 0 and b"raw_line" in expected["dlq"]
    _check_equal(store.files.finish(store.conn, run), expected, tmp_path / "data")


def test_bytes_of_a_rolled_back_or_killed_transaction_are_cut_off(tmp_path):
    data_dir = tmp_path / "data"
    store = Loading(str(tmp_path / "data.db"), str(data_dir))
    store.load_pages([_page("r1", 0)])
    # A batch whose commit never happens: its page's lines were appended, the transaction rolled back.
    with pytest.raises(TypeError):
        store.load_pages([_page("r1", 1), {**_page("r1", 2), "raw": None}])
    grown = {p.name: p.stat().st_size for p in data_dir.rglob("*.loading")}
    # A saver killed after writing and before its commit leaves bytes past the recorded length, too.
    for path in data_dir.rglob("*.loading"):
        with path.open("ab") as fh:
            fh.write(b'{"half a line of a killed saver"')
    store.close()
    store = Loading(str(tmp_path / "data.db"), str(data_dir))  # restarted: no digest in memory
    store.load_pages([_page("r1", 1), _page("r1", 2)])
    run = _complete(store, "r1", 3)
    assert any(p.stat().st_size != grown[p.name] for p in data_dir.rglob("*.loading"))
    _check_equal(store.files.finish(store.conn, run), _from_tables(store, run, tmp_path / "expected"), data_dir)


def test_a_page_out_of_order_leaves_the_files_to_the_tables(tmp_path):
    store = Loading(str(tmp_path / "data.db"), str(tmp_path / "data"))
    store.load_pages([_page("r1", 0)])
    store.load_pages([_page("r1", 2)])  # page 1 comes later (another transformer, a redelivery)
    store.load_pages([_page("r1", 1)])
    run = _complete(store, "r1", 3)
    assert store.files.finish(store.conn, run) is None
    store.files.discard(run)
    assert not list((tmp_path / "data").rglob("*.loading"))


def test_a_run_whose_first_pages_were_loaded_without_appending_is_written_from_the_tables(tmp_path):
    Store(str(tmp_path / "data.db")).load_pages([_page("r1", 0)])  # e.g. before an upgrade, or encrypted
    store = Loading(str(tmp_path / "data.db"), str(tmp_path / "data"))
    store.load_pages([_page("r1", 1)])
    assert store.files.finish(store.conn, _complete(store, "r1", 2)) is None


def test_a_file_shorter_than_recorded_is_never_used(tmp_path):
    store = Loading(str(tmp_path / "data.db"), str(tmp_path / "data"))
    store.load_pages([_page("r1", 0)])
    victim = next((tmp_path / "data").rglob("etl_*.loading"))
    victim.write_bytes(victim.read_bytes()[:-3])  # what a power loss after the commit could leave
    store.load_pages([_page("r1", 1)])
    assert store.files.finish(store.conn, _complete(store, "r1", 2)) is None


def test_two_runs_load_side_by_side_into_their_own_files(tmp_path):
    store = Loading(str(tmp_path / "data.db"), str(tmp_path / "data"))
    store.load_pages([_page("a", 0), _page("b", 0, size=7, run_ts="20261125_030001")])
    store.load_pages([_page("b", 1, size=7, run_ts="20261125_030001"), _page("a", 1)])
    for run_id in ("a", "b"):
        run = _complete(store, run_id, 2)
        expected = _from_tables(store, run, tmp_path / "expected")
        _check_equal(store.files.finish(store.conn, run), expected, tmp_path / "data", run_id)
