"""The run contract: a run's statuses and their moves, the events told about runs, the user columns and ids.

One home for what the services and the database agree on about a run (python-arq keeps ``JobStatus`` in
``arq/jobs.py``). The SQL CHECK of ``etl_runs.status``, the API's ``Status``, the console's labels, the SQL
console's allow-list and the saver's inserts follow from here or are tied to it by a test. The values are the
wire and database format: changing one is a migration, not a rename.
"""

import enum
from dataclasses import dataclass
from typing import Any, TypeGuard

import redis
from redis.client import Pipeline

from etl_common import jsontext, streams


class RunStatus(enum.StrEnum):
    """Where a run is (``etl_runs.status``)."""

    RUNNING = "running"  # the extractor is fetching its pages
    EXTRACTED = "extracted"  # every page fetched (phase 1); pages being transformed and loaded
    TRANSFORMED = "transformed"  # every page transformed (phase 2); pages being loaded
    LOADED = "loaded"  # every page loaded; its files being written and uploaded
    UPLOAD_PENDING = "upload_pending"  # files written, the upload failed: tried again after a backoff
    SUCCEEDED = "succeeded"  # files written and uploaded (phase 3)
    FAILED = "failed"  # it can never complete as it is; ``error`` says why (a resume or replay may revive it)


S = RunStatus
# status -> the statuses it may move to (a repeated event leaves a run where it is: not listed).
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.RUNNING: frozenset({S.EXTRACTED, S.TRANSFORMED, S.FAILED}),
    S.EXTRACTED: frozenset({S.TRANSFORMED, S.LOADED, S.FAILED}),
    S.TRANSFORMED: frozenset({S.LOADED, S.FAILED}),
    S.LOADED: frozenset({S.UPLOAD_PENDING, S.SUCCEEDED, S.FAILED}),
    S.UPLOAD_PENDING: frozenset({S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    # Resumed by the extractor (running), or its pages back (replayed, a stalled stage came back): extracted.
    S.FAILED: frozenset({S.RUNNING, S.EXTRACTED}),
}
INITIAL = S.RUNNING  # the column's default: a run first seen by any event or page starts here
FINAL = frozenset({S.SUCCEEDED, S.FAILED})  # nothing moves it on by itself
# Not final, yet nothing in flight: the run waits for a retry (upload_pending). Progress views stop here.
AT_REST = FINAL | {S.UPLOAD_PENDING}
IN_FLIGHT = frozenset(S) - AT_REST  # a stage is working on it: the watchdog's concern


class BadTransition(ValueError):
    """A move the run contract does not allow (a bug in the caller)."""


def can_move(old: RunStatus | str, new: RunStatus | str) -> bool:
    """Whether a run may move from ``old`` to ``new`` (staying where it is is always allowed)."""
    old, new = RunStatus(old), RunStatus(new)
    return old == new or new in TRANSITIONS[old]


def check_transition(old: RunStatus | str, new: RunStatus | str) -> RunStatus:
    """``new`` as a status when the move is allowed; else :class:`BadTransition` naming both ends."""
    if not can_move(old, new):
        raise BadTransition(f"a run cannot move from {old!s} to {new!s} (allowed: {sorted(TRANSITIONS[S(old)])})")
    return RunStatus(new)


def sql_in(statuses: frozenset[RunStatus] | set[RunStatus] | tuple[RunStatus, ...]) -> str:
    """``('a','b')`` for a SQL ``IN``, in declaration order (the values are fixed identifiers, never input)."""
    return "(" + ",".join(f"'{s}'" for s in RunStatus if s in statuses) + ")"


class EventType(enum.StrEnum):
    """The ``type`` of an entry of the events stream (``etl:stream:events``)."""

    RUN_STARTED = "run_started"  # extractor: a new run
    RUN_RESUMED = "run_resumed"  # extractor: a failed run taken up again from its checkpoint
    RUN_WARNING = "run_warning"  # extractor: something noticed without failing
    PHASE1_COMPLETE = "phase1_complete"  # extractor: every page fetched
    EXTRACT_FAILED = "extract_failed"  # extractor: the extraction gave up (resumable)
    RUN_FAILED = "run_failed"  # any stage: part of the run was dead-lettered, it can never complete
    RUN_ERROR = "run_error"  # any stage: an unexpected error it retries; shown on the run
    PHASE2_COMPLETE = "phase2_complete"  # transformer (a Lua script: transformer.worker._COMPLETE)
    RUN_REPLAYED = "run_replayed"  # etl_common.deadletters: its dead-lettered pages went back on their streams
    PHASE3_COMPLETE = "phase3_complete"  # saver: files written and uploaded
    RETENTION_REQUESTED = "retention_requested"  # api: apply the retention policy now (about no run: no Event)


@dataclass(frozen=True)
class Event:
    """One event about a run, as it travels: its type and its other fields (the wire format is the flat dict)."""

    type: EventType
    run_id: str
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The flat JSON object of the wire: ``{"type": ..., "run_id": ..., **fields}``."""
        return {"type": str(self.type), "run_id": self.run_id, **self.fields}


def _event(kind: EventType, run_id: str, **fields: Any) -> Event:
    return Event(kind, run_id, fields)


def run_started(run_id: str, run_ts: str, trigger: str, started_at: str, names: dict[str, str]) -> Event:
    """A new run: its timestamp, what started it and its three file names."""
    return _event(EventType.RUN_STARTED, run_id, run_ts=run_ts, trigger=trigger, started_at=started_at, **names)


def run_resumed(run_id: str, trigger: str) -> Event:
    """A failed run taken up again."""
    return _event(EventType.RUN_RESUMED, run_id, trigger=trigger)


def run_warning(run_id: str, run_ts: str, warning: str) -> Event:
    """Something the run noticed without failing."""
    return _event(EventType.RUN_WARNING, run_id, run_ts=run_ts, warning=warning)


def phase1_complete(run_id: str, run_ts: str, raw_file: str, records: int, pages: int, total: int) -> Event:
    """Every page fetched: how many pages and records, and the source's total."""
    return _event(
        EventType.PHASE1_COMPLETE, run_id, raw_file=raw_file, records=records, pages=pages, total=total, run_ts=run_ts
    )


def extract_failed(run_id: str, error: str) -> Event:
    """The extraction gave up; a resume may take it up again."""
    return _event(EventType.EXTRACT_FAILED, run_id, error=error)


def run_failed(run_id: str, error: str, stage: str | None = None) -> Event:
    """Part of the run is lost (dead-lettered): it can never complete."""
    return _event(EventType.RUN_FAILED, run_id, **({"stage": stage} if stage else {}), error=error[:2000])


def run_error(run_id: str, error: str, stage: str) -> Event:
    """An unexpected error the stage retries, shown on the run."""
    return _event(EventType.RUN_ERROR, run_id, stage=stage, error=error[:2000])


def run_replayed(run_id: str, actor: str, at: str) -> Event:
    """The run's dead-lettered pages went back on their streams."""
    return _event(EventType.RUN_REPLAYED, run_id, actor=actor, at=at)


def phase3_complete(run_id: str, files: list[str]) -> Event:
    """The run succeeded: its files written and uploaded."""
    return _event(EventType.PHASE3_COMPLETE, run_id, status=str(S.SUCCEEDED), files=files)


def emit(pipe: redis.Redis | Pipeline, events_stream: str, event: Event, traceparent: str | None = None) -> None:
    """Add ``event`` to the events stream through ``pipe`` (a client or a pipeline), trimmed to the recent past."""
    pipe.xadd(events_stream, streams.encode(event.as_dict(), traceparent), maxlen=100_000, approximate=True)


def parse_event(payload: dict[str, Any]) -> Event | None:
    """An events-stream payload as an :class:`Event`; None for a type this contract does not know (ignored)."""
    try:
        kind = EventType(str(payload.get("type")))
    except ValueError:
        return None
    fields = {k: v for k, v in payload.items() if k not in ("type", "run_id")}
    return Event(kind, str(payload.get("run_id", "")), fields)


@dataclass(frozen=True)
class UserColumn:
    """A typed column of the user tables, taken from the stored record at ``path`` (None: not from the record)."""

    name: str
    sql_type: str  # as in the migrations
    python_type: type  # what the API's model says (always nullable)
    path: tuple[str, ...] | None
    tables: frozenset[str]  # the user tables that have it
    api: bool = True  # in the API's records (api.models.Record, api.records)
    console: bool = True  # in the SQL console's allow-list (api.sqlconsole.ALLOWED)


_ALL = frozenset({"raw_users", "processed_users", "invalid_users"})
_PROCESSED, _INVALID = frozenset({"processed_users"}), frozenset({"invalid_users"})
# In the order of the tables and of the API's model.
USER_COLUMNS: tuple[UserColumn, ...] = (
    UserColumn("user_id", "INTEGER", int, ("id",), _ALL),
    UserColumn("first_name", "TEXT", str, ("firstName",), _ALL),
    UserColumn("last_name", "TEXT", str, ("lastName",), _ALL),
    UserColumn("email", "TEXT", str, ("email",), _ALL),
    UserColumn("username", "TEXT", str, ("username",), _ALL),
    UserColumn("age", "REAL", float, ("age",), _ALL),
    UserColumn("gender", "TEXT", str, ("gender",), _ALL),
    UserColumn("department", "TEXT", str, ("company", "department"), _ALL),
    UserColumn("department_code", "TEXT", str, None, _PROCESSED),  # the transformer's enrichment
    UserColumn("title", "TEXT", str, ("company", "title"), _PROCESSED),
    UserColumn("role", "TEXT", str, ("role",), _PROCESSED),
    UserColumn("city", "TEXT", str, ("address", "city"), _PROCESSED),
    UserColumn("state", "TEXT", str, ("address", "state"), _PROCESSED),
    UserColumn("user_agent", "TEXT", str, ("userAgent",), _PROCESSED),
    UserColumn("error_reason", "TEXT", str, None, _INVALID),  # the transformer's verdict
    # The rules an invalid record broke: in the SQL console, not in the API's records.
    UserColumn("failed_rules", "TEXT", str, None, _INVALID, api=False),
)
# Columns every user table has besides the typed ones (and ``record``, ``raw_line``: masked secrets, unparsed
# text, never in the console): where the row is, and when it was written.
ROW_COLUMNS = ("id", "run_id", "page", "position")
INSERTED_AT = "inserted_at"


def is_user_id(value: Any) -> TypeGuard[int]:
    """Whether ``value`` identifies a user (``user_id``): an integer a signed 64-bit column holds; not a bool, a
    float such as ``7.0`` or a numeric string. The transformer rejects a record without one; the extractor tells
    a run's users apart by these ids alone, so a broken id never makes the source's pages look repeated."""
    return isinstance(value, int) and not isinstance(value, bool) and jsontext.INT64_MIN <= value <= jsontext.INT64_MAX


def user_columns(table: str) -> tuple[UserColumn, ...]:
    """The typed columns of ``table`` (``raw_users``, ``processed_users``, ``invalid_users``), in order."""
    return tuple(c for c in USER_COLUMNS if table in c.tables)


def common_columns() -> tuple[UserColumn, ...]:
    """The typed columns every user table shares."""
    return user_columns("raw_users")


def state_diagram() -> str:
    """The statuses and their moves as a mermaid ``stateDiagram-v2`` (docs/architecture.md holds this text)."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL}"]
    lines += [f"    {old} --> {new}" for old in RunStatus for new in RunStatus if new in TRANSITIONS[old]]
    lines += [f"    {s} --> [*]" for s in RunStatus if s in FINAL]
    return "\n".join(lines)
