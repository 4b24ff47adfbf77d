"""The report's warm child: it follows a run as its pages commit, and its death or hang never holds a run back."""

import signal
import time

import pytest

from dummyjson.users import make_bad_user, make_user
from etl_common import metrics
from saver import quality, report
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN, RUN_TS = "r1", "20261125_030000"


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data.db"))
    s.apply_event({"type": "run_started", "run_id": RUN, "run_ts": RUN_TS})
    yield s
    s.close()


def load(store: Store, first_page: int, pages: int, page_size: int = 20) -> None:
    """Pages ``first_page``.. of the run, every 4th user broken."""
    departments = load_departments()
    batch = []
    for page in range(first_page, first_page + pages):
        ids = range(page * page_size + 1, (page + 1) * page_size + 1)
        users = [make_bad_user(i, i // 4, 0) if i % 4 == 0 else make_user(i, 0) for i in ids]
        batch.append({"run_id": RUN, "run_ts": RUN_TS, "page": page, **transform_page(users, departments)})
    store.load_pages(batch)


@pytest.fixture
def reports(store, tmp_path):
    r = report.Reports(store, str(tmp_path / "data.db"), lambda: None)
    yield r
    r.kill_all()


def errors() -> float:
    return metrics.ERRORS.labels(stage="quality")._value.get()


def test_a_followed_run_gives_the_report_of_one_reading(store, tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "FOLLOW_ROWS", 50)
    db = tmp_path / "data.db"
    load(store, 0, 3)
    follow = quality.Follow(db, RUN)
    follow.step()
    load(store, 3, 2)
    follow.step()  # 40 new rows: fewer than FOLLOW_ROWS, left for later
    assert follow.tally.rows["raw_users"] == 60
    load(store, 5, 1)
    follow.step()
    follow.step()  # nothing new
    assert follow.tally.rows["raw_users"] == 120
    load(store, 6, 1)  # committed after the last step: read by the report itself
    assert quality.compute(db, RUN, follow=follow) == quality.compute(db, RUN)


def test_rows_gone_since_they_were_read_are_not_counted(store, tmp_path):
    """What was read no longer matches the run (here rows deleted): the report reads the run again, whole."""
    db = tmp_path / "data.db"
    load(store, 0, 4)
    follow = quality.Follow(db, RUN)
    follow.step()
    with store.transaction():
        for table in ("processed_users", "invalid_users", "raw_users"):
            store.conn.execute(f"DELETE FROM {table} WHERE page = 1")
    got = quality.compute(db, RUN, follow=follow)
    assert got == quality.compute(db, RUN) and got["records"] == 60


def test_the_warm_child_reports_its_run(store, reports):
    load(store, 0, 2)
    reports.prepare(RUN)
    child = reports.spare
    assert child is not None and child.proc.poll() is None
    load(store, 2, 2)
    reports.start(RUN)
    assert reports.jobs[RUN] is child  # the warm child took the run, no new one
    reports.wait(RUN)
    assert store.has_quality(RUN)
    stored = store.conn.execute("SELECT report FROM run_quality WHERE run_id = ?", (RUN,)).fetchone()[0]
    assert '"records":80' in stored


def test_a_warm_child_killed_while_waiting_is_replaced_by_a_new_one(store, reports):
    load(store, 0, 2)
    reports.prepare(RUN)
    dead = reports.spare
    assert dead is not None
    dead.proc.send_signal(signal.SIGKILL)
    dead.proc.wait()
    reports.start(RUN)
    assert reports.jobs[RUN] is not dead
    reports.wait(RUN)
    assert store.has_quality(RUN)


def test_a_child_killed_while_computing_costs_the_report_not_the_run(store, reports):
    load(store, 0, 2)
    reports.prepare(RUN)
    reports.start(RUN)
    before = errors()
    reports.jobs[RUN].proc.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    reports.wait(RUN)  # returns: the run goes on (to succeeded) without a report
    assert time.monotonic() - t0 < 10
    assert not store.has_quality(RUN) and RUN not in reports.jobs
    assert errors() == before + 1


def test_a_warm_child_that_hangs_is_stopped_at_the_time_limit(tmp_path, monkeypatch):
    """The limit counts from the moment the run is handed over (here a child that never answers)."""
    (tmp_path / "saver").mkdir()
    (tmp_path / "saver" / "__init__.py").write_text("")
    (tmp_path / "saver" / "quality.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(report, "_PACKAGES", str(tmp_path))
    job = report.Job("x.db", RUN, timeout_s=1, follow=True)
    time.sleep(1.5)  # waiting for its run: no limit yet
    assert not job.done()
    assert job.go(RUN)
    while not job.done():
        time.sleep(0.05)
    with pytest.raises(report.ReportFailed, match="took over"):
        job.result()
    job.discard()


def test_the_warm_child_ends_with_the_saver(store, tmp_path):
    """End of file on its input (the saver stopped or dropped it) ends the child, having printed nothing."""
    reports = report.Reports(store, str(tmp_path / "data.db"), lambda: None)
    reports.prepare(RUN)
    child = reports.spare
    assert child is not None and child.proc.stdin is not None
    child.proc.stdin.close()
    assert child.proc.wait(timeout=30) == 0
    child.out.seek(0)
    assert child.out.read() == b""
    reports.drop_spare()


def test_a_warm_child_is_stopped_when_its_run_stops_loading(store, reports, monkeypatch):
    monkeypatch.setattr(report, "IDLE_S", 0.2)
    reports.prepare(RUN)
    child = reports.spare
    assert child is not None
    reports.collect()
    assert reports.spare is child  # pages came a moment ago
    time.sleep(0.3)
    reports.collect()
    assert reports.spare is None and child.proc.poll() is not None
