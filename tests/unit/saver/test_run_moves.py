"""The store moves a run only as the run contract allows (etl_common.runs.TRANSITIONS), from every status."""

from collections.abc import Callable

import pytest

from etl_common import runs
from etl_common.runs import RunStatus
from saver.store import STALLED, Store

RUN_TS = "20261125_030000"
NAMES = {"raw_file": "a", "processed_file": "b", "dlq_file": "c"}
PAGE = {"run_id": "r1", "run_ts": RUN_TS, "page": 0, "raw": [{"id": 1}], "valid": [], "invalid": []}

STEPS: dict[str, Callable[[Store], object]] = {
    "run_started": lambda s: s.apply_event(runs.run_started("r1", RUN_TS, "schedule", "t", NAMES)),
    "run_resumed": lambda s: s.apply_event(runs.run_resumed("r1", "api")),
    "run_warning": lambda s: s.apply_event(runs.run_warning("r1", RUN_TS, "w")),
    "phase1_complete": lambda s: s.apply_event(runs.phase1_complete("r1", RUN_TS, "a", 1, 1, 1)),
    "phase2_complete": lambda s: s.apply_event({"type": "phase2_complete", "run_id": "r1"}),
    "extract_failed": lambda s: s.apply_event(runs.extract_failed("r1", "e")),
    "run_failed": lambda s: s.apply_event(runs.run_failed("r1", "e")),
    "run_error": lambda s: s.apply_event(runs.run_error("r1", "e", "transform")),
    "run_replayed": lambda s: s.apply_event(runs.run_replayed("r1", "ops", "t")),
    "page_loaded": lambda s: s.load_pages([PAGE]),
    "complete_runs": lambda s: s.complete_runs(),
    "deferred": lambda s: s.mark("r1", RunStatus.UPLOAD_PENDING, "e"),
    "uploaded": lambda s: s.mark_uploaded("r1", {}),
    "watchdog": lambda s: s.fail_unless_progressed("r1", s.run("r1")["status"], s.run("r1")["updated_at"], "x"),
}
# What the saver does only from some statuses (its callers check first): finishing steps act on loaded runs.
CALLED_FROM = {
    "deferred": {RunStatus.LOADED, RunStatus.UPLOAD_PENDING},
    "uploaded": {RunStatus.LOADED, RunStatus.UPLOAD_PENDING},
    "watchdog": runs.IN_FLIGHT,
}


CASES = [(start, step) for step in STEPS for start in RunStatus if start in CALLED_FROM.get(step, set(RunStatus))]


def _moved(path: str, start: RunStatus, step: str) -> RunStatus:
    """The status a run in ``start`` (its pages announced, none loaded; failed by the watchdog) has after ``step``."""
    store = Store(path)
    try:
        store.apply_event(runs.run_started("r1", RUN_TS, "schedule", "t", NAMES))
        store.conn.execute(
            "UPDATE etl_runs SET status=?, pages_expected=?, error=? WHERE run_id='r1'",
            (start, 1 if step == "page_loaded" else 0, f"{STALLED} for over 1 h" if start == "failed" else None),
        )
        store.conn.commit()
        STEPS[step](store)
        row = store.run("r1")
        assert row is not None
        return RunStatus(row["status"])
    finally:
        store.close()


@pytest.mark.parametrize(("start", "step"), CASES)
def test_every_move_of_the_store_is_an_allowed_transition(tmp_path, start, step):
    moved = _moved(str(tmp_path / "data.db"), start, step)
    assert runs.can_move(start, moved), f"{step} moved a {start} run to {moved}"


def test_the_moves_the_store_makes_cover_every_allowed_transition(tmp_path):
    """The transitions table holds no move the saver cannot make: each one is made by some step."""
    seen = {(start, _moved(str(tmp_path / f"{i}.db"), start, step)) for i, (start, step) in enumerate(CASES)}
    allowed = {(a, b) for a, nexts in runs.TRANSITIONS.items() for b in nexts}
    assert allowed - seen == set()
