"""The storage reserve beside the SQLite database: held, given back, held again; never on PostgreSQL or at 0."""

import os

from saver.storage import Reserve


def test_the_reserve_holds_its_size_in_real_blocks_and_is_given_back(tmp_path):
    reserve = Reserve(str(tmp_path / "data.db"), 256 << 10)
    assert reserve.hold() == 256 << 10
    path = tmp_path / "data.db-reserve"
    assert path.stat().st_size == 256 << 10 and path.stat().st_blocks * 512 >= 256 << 10  # not a sparse file
    assert reserve.hold() == 256 << 10  # holding again is idempotent
    assert reserve.release() and not path.exists()
    assert not reserve.release()  # nothing left to give back
    assert reserve.hold() == 256 << 10


def test_no_reserve_without_a_database_file_or_a_size(tmp_path):
    for reserve in (Reserve("", 1 << 20), Reserve(str(tmp_path / "data.db"), 0)):
        assert reserve.path is None and reserve.hold() == 0 and not reserve.release()
    assert os.listdir(tmp_path) == []


def test_a_reserve_that_cannot_be_made_is_not_an_error(tmp_path):
    reserve = Reserve(str(tmp_path / "missing" / "data.db"), 1 << 20)
    assert reserve.hold() == 0 and not reserve.release()
