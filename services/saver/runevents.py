"""A run's header moved by the events told about it (any order, any number of times): one SQL step per event."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from etl_common.runs import FINAL, Event, EventType, RunStatus, sql_in

if TYPE_CHECKING:
    from saver.store import Store

S = RunStatus


def _error(event: Event) -> str:
    # U+0000 spelled as its JSON escape: PostgreSQL's text cannot hold the character (an error may quote a record).
    return str(event.fields.get("error", ""))[:2000].replace("\x00", "\\u0000")


def add_warning(conn: Any, run_id: str, warning: str, at: str) -> bool:
    """Append ``warning`` (to 2000 characters) to the run's JSON array of warnings unless it is there; True when added.

    Read, appended in Python and written back only if unchanged meanwhile (another saver's warning is kept): the
    same compact JSON on both engines, and no engine's JSON functions.
    """
    text = warning[:2000]
    while True:
        row = conn.execute("SELECT warnings FROM etl_runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return False
        before = row[0]
        listed = orjson.loads(before) if before else []
        if text in listed:
            return False
        cur = conn.execute(
            "UPDATE etl_runs SET warnings=?, updated_at=? WHERE run_id=? AND COALESCE(warnings, '')=?",
            (orjson.dumps([*listed, text]).decode(), at, run_id, before or ""),
        )
        if cur.rowcount == 1:
            return True


def _update(store: "Store", event: Event, at: str, sets: str, where: str = "", *values: object) -> None:
    """``UPDATE etl_runs SET <sets>, updated_at WHERE run_id <where>`` for the event's run; ``values`` fill ``sets``."""
    store.conn.execute(f"UPDATE etl_runs SET {sets}, updated_at=? WHERE run_id=? {where}", (*values, at, event.run_id))


def _started(store: "Store", event: Event, at: str) -> None:
    store._ensure_run(event.run_id, event.fields["run_ts"])
    _update(
        store, event, at, "trigger=?, started_at=?", "", event.fields.get("trigger"), event.fields.get("started_at")
    )


def _extracted(store: "Store", event: Event, at: str) -> None:
    f = event.fields
    store._ensure_run(event.run_id, f["run_ts"])
    status = f"CASE WHEN status IN {sql_in({S.RUNNING, S.FAILED})} THEN '{S.EXTRACTED}' ELSE status END"
    sets = f"pages_expected=?, total_expected=?, error=NULL, status={status}"
    _update(store, event, at, sets, "", int(f["pages"]), int(f.get("total", f["records"])))


def _transformed(store: "Store", event: Event, at: str) -> None:
    status = f"CASE WHEN status IN {sql_in({S.RUNNING, S.EXTRACTED})} THEN '{S.TRANSFORMED}' ELSE status END"
    _update(store, event, at, f"status={status}")


def _extract_failed(store: "Store", event: Event, at: str) -> None:
    _update(store, event, at, f"status='{S.FAILED}', error=?", f"AND status='{S.RUNNING}'", _error(event))


def _warning(store: "Store", event: Event, at: str) -> None:
    store._ensure_run(event.run_id, event.fields["run_ts"])
    store._add_warning(event.run_id, str(event.fields["warning"]))


def _failed(store: "Store", event: Event, at: str) -> None:
    # A stage gave up on part of the run (an entry dead-lettered): it can never complete.
    _update(store, event, at, f"status='{S.FAILED}', error=?", f"AND status<>'{S.SUCCEEDED}'", _error(event))


def _errored(store: "Store", event: Event, at: str) -> None:
    # An unexpected error the stage will retry: shown on the run, whose status stays as it is.
    _update(store, event, at, "error=?", f"AND status NOT IN {sql_in(FINAL)}", _error(event))


def _replayed(store: "Store", event: Event, at: str) -> None:
    # Its dead-lettered pages went back onto their stream (etl_common.deadletters): it may complete now.
    sets, where = f"status='{S.EXTRACTED}', error=NULL", f"AND status='{S.FAILED}' AND pages_expected IS NOT NULL"
    _update(store, event, at, sets, where)


def _resumed(store: "Store", event: Event, at: str) -> None:
    _update(store, event, at, f"status='{S.RUNNING}', error=NULL", f"AND status='{S.FAILED}'")


# The events that move a run's header; the others (phase 3, retention) are not the header's.
STEPS: dict[EventType, Callable[["Store", Event, str], None]] = {
    EventType.RUN_STARTED: _started,
    EventType.PHASE1_COMPLETE: _extracted,
    EventType.PHASE2_COMPLETE: _transformed,
    EventType.EXTRACT_FAILED: _extract_failed,
    EventType.RUN_WARNING: _warning,
    EventType.RUN_FAILED: _failed,
    EventType.RUN_ERROR: _errored,
    EventType.RUN_REPLAYED: _replayed,
    EventType.RUN_RESUMED: _resumed,
}


def apply(store: "Store", event: Event, at: str) -> None:
    """The event's step on the open transaction; nothing for an event that does not move a header."""
    step = STEPS.get(event.type)
    if step is not None:
        step(store, event, at)
