"""Finishing a loaded run is one step that says how it ended: Succeeded, or Deferred with a doubling backoff."""

import time

import pytest

from dummyjson.users import make_user
from etl_common import runs
from etl_common.retry import Backoff
from etl_common.runs import RunStatus
from saver import report
from saver.finisher import Deferred, Finisher, Succeeded
from saver.settings import SaverSettings
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN_TS = "20261125_030000"


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data.db"))
    records = [make_user(i) for i in range(1, 6)]
    s.load_pages([{"run_id": "r1", "run_ts": RUN_TS, "page": 0, **transform_page(records, load_departments())}])
    s.apply_event(runs.phase1_complete("r1", RUN_TS, "raw", 5, 1, 5))
    assert s.complete_runs() == ["r1"]
    s.save_quality("r1", {"records": 5})  # its report exists: no child process is started for it
    yield s
    s.close()


def _finisher(tmp_path, store: Store, **settings) -> Finisher:
    s = SaverSettings(db_path=str(tmp_path / "data.db"), data_dir=str(tmp_path / "data"), **settings)
    return Finisher(s, store, None, None, report.Reports(store, s.db_path, lambda: None))


def test_backoff_doubles_up_to_its_bound():
    assert [Backoff(2, 10).delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_a_run_without_sftp_succeeds_with_its_files_written(tmp_path, store):
    finisher = _finisher(tmp_path, store, sftp_enabled=False)
    assert finisher.finish("r1") == Succeeded({})
    files = {f["kind"]: f["records"] for f in store.files("r1")}
    assert files == {"raw": 5, "processed": 5, "dlq": 0}
    assert all((tmp_path / "data" / f["name"]).exists() for f in store.files("r1"))
    assert store.run("r1")["status"] == RunStatus.LOADED  # the caller records the outcome, once


def test_an_unreadable_recipients_file_defers_the_run_with_the_reason(tmp_path, store):
    missing = tmp_path / "recipients.txt"
    finisher = _finisher(
        tmp_path, store, sftp_enabled=False, encryption_enabled=True, encryption_recipients_file=str(missing)
    )
    finisher.backoff = Backoff(60, 600)
    t0 = time.monotonic()
    first = finisher.finish("r1")
    assert isinstance(first, Deferred) and str(missing) in first.reason and "unreadable" in first.reason
    assert 60 <= first.until - t0 < 61
    second = finisher.finish("r1")  # failed again: the wait doubles
    assert isinstance(second, Deferred) and 120 <= second.until - t0 < 121
    assert finisher.due["r1"] == (second.until, 2)


def test_a_refused_upload_defers_and_is_retried_only_when_due(tmp_path, store):
    from testbed import free_port

    finisher = _finisher(tmp_path, store, sftp_port=free_port(), sftp_attempts=1, sftp_backoff_s=0)
    outcome = finisher.finish("r1")
    assert isinstance(outcome, Deferred), outcome
    store.mark("r1", RunStatus.UPLOAD_PENDING, outcome.reason)
    assert finisher.due_now() == []  # its wait is not over
    finisher.due["r1"] = (0.0, 1)
    assert finisher.due_now() == [("r1", False)]  # due, its three files whole: the upload only is tried again
    (tmp_path / "data" / store.files("r1")[0]["name"]).unlink()
    assert finisher.due_now() == [("r1", True)]  # a file gone: written again
    store.mark("r1", RunStatus.SUCCEEDED)  # finished elsewhere meanwhile: dropped, not retried
    assert finisher.due_now() == [] and "r1" not in finisher.due


def test_a_run_another_saver_put_off_is_due_after_the_first_wait_and_a_known_one_keeps_its_own(tmp_path, store):
    finisher = _finisher(tmp_path, store)
    finisher.backoff = Backoff(60, 600)
    finisher.due["mine"] = (5.0, 3)
    t0 = time.monotonic()
    finisher.adopt(["mine", "r1"])
    assert finisher.due["mine"] == (5.0, 3)  # this saver's own wait and failures stand
    until, failures = finisher.due["r1"]
    assert 60 <= until - t0 < 61 and failures == 0
