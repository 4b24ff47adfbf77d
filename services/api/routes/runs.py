"""Runs: the header table the frontend's drop-down is built from, one run, and "run now"."""

from typing import Annotated, Any

import orjson
import redis
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import commands
from api.db import Database
from api.deps import AUTH_ERRORS, AuthDep, DbDep, error, json_response, raw_json, run_key
from api.models import NO_CONTROL, QualityReport, Run, RunDetail, RunRequested, Status
from etl_common import tracing
from etl_common.runs import RunStatus

router = APIRouter(tags=["runs"], dependencies=[AuthDep], responses=AUTH_ERRORS)

_COLUMNS = (
    "id, run_timestamp, processed_file, valid_count, invalid_count, run_id, status, trigger, started_at, "
    "finished_at, raw_count, raw_file, dlq_file, total_expected, error"
)
_TOTAL = {"X-Total-Count": {"description": "runs matching the filter", "schema": {"type": "integer"}}}


@router.get("/etl_runs", summary="Runs, newest first", response_model=list[Run], responses={200: {"headers": _TOTAL}})
async def list_runs(
    db: DbDep,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Runs newest first, each with its files, optionally only those in `status`; `X-Total-Count` counts them all."""
    # Small, hot and cheap: answered from the event loop, cached until the saver next commits.
    body, total = db.cached(("runs", status, limit, offset), db.version(), lambda: _runs(db, status, limit, offset))
    return raw_json(body, {"X-Total-Count": str(total)})


def _runs(db: Database, status: str | None, limit: int, offset: int) -> tuple[bytes, int]:
    where, args = ("WHERE status = ?", [status]) if status else ("", [])
    total = db.scalar(f"SELECT count(*) FROM etl_runs {where}", args)
    runs = db.dicts(
        f"SELECT {_COLUMNS} FROM etl_runs {where} ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset]
    )
    _attach_files(db, runs)
    return orjson.dumps(runs), total


def _attach_files(db: Database, runs: list[dict[str, Any]]) -> None:
    by_run: dict[str, list[dict[str, Any]]] = {r["run_id"]: [] for r in runs}
    if by_run:
        marks = ",".join("?" * len(by_run))
        for f in db.dicts(
            "SELECT run_id, kind, name, bytes, sha256, records, encrypted, remote_path, uploaded_at "
            f"FROM uploaded_files WHERE run_id IN ({marks}) ORDER BY kind",
            list(by_run),
        ):
            f["encrypted"] = bool(f["encrypted"])
            by_run[f.pop("run_id")].append(f)
    for r in runs:
        r["files"] = by_run[r["run_id"]]


@router.get(
    "/etl_runs/{run}",
    summary="One run with counts, timings, error and files",
    response_model=RunDetail,
    responses=error(404, "No such run"),
)
async def get_run(
    db: DbDep,
    request: Request,
    run: Annotated[str, Path(description="the integer id, or the run_id text", max_length=200, pattern=NO_CONTROL)],
) -> Response:
    """One run by its integer `id` or its `run_id`: counts, pages, duration, error, warnings, files, dead letters.

    `dead_letters` is null when Redis cannot be reached.
    """
    column, key = run_key(run)
    rows = db.dicts(
        f"SELECT {_COLUMNS}, pages_expected, updated_at, warnings, (SELECT count(*) FROM loaded_pages lp "
        f"WHERE lp.run_id = r.run_id) AS pages_loaded, {_duration(db)} AS duration_s "
        f"FROM etl_runs r WHERE {column} = ?",
        (key,),
    )
    if not rows:
        raise HTTPException(404, f"no run {run!r}")
    _attach_files(db, rows)
    rows[0]["warnings"] = orjson.loads(rows[0]["warnings"]) if rows[0]["warnings"] else []
    queue: commands.CommandQueue = request.app.state.commands
    # Redis is a network call: off the event loop.
    rows[0]["dead_letters"] = await run_in_threadpool(queue.dead_letters, rows[0]["run_id"])
    return json_response(rows[0])


def _duration(db: Database) -> str:
    return db.dialect.seconds_between.format(start="started_at", end="finished_at")


def schema_summary(db: Database, run_id: str) -> dict[str, Any] | None:
    """The drift and contract report of the run for its quality report (the fields: GET /etl_runs/{id}/schema)."""
    rows = db.dicts("SELECT schema, drift, previous_run_id FROM run_schema WHERE run_id = ?", (run_id,))
    if not rows:
        return None
    observed = orjson.loads(rows[0]["schema"])
    return {
        "fields": len(observed["fields"]),
        "previous_run_id": rows[0]["previous_run_id"],
        "drift": orjson.loads(rows[0]["drift"]),
        "contract": observed["contract"],
    }


def run_joined(db: Database, run: str, table: str, columns: str) -> dict[str, Any]:
    """The run's ``run_id`` and ``status`` with ``columns`` of its row in ``table`` (null when it has none);
    404 for no such run."""
    column, key = run_key(run)
    found = ", ".join(f"t.{c.strip()}" for c in columns.split(","))
    rows = db.dicts(
        f"SELECT r.run_id, r.status, {found} FROM etl_runs r LEFT JOIN {table} t ON t.run_id = r.run_id "
        f"WHERE r.{column} = ?",
        (key,),
    )
    if not rows:
        raise HTTPException(404, f"no run {run!r}")
    return rows[0]


@router.get(
    "/etl_runs/{run}/quality",
    summary="The run's data-quality report",
    response_model=QualityReport,
    responses={**error(404, "No such run"), **error(409, "The run has no report yet (its pages are not all loaded)")},
)
async def get_quality(
    db: DbDep,
    run: Annotated[str, Path(description="the integer id, or the run_id text", max_length=200, pattern=NO_CONTROL)],
) -> Response:
    """The run's data-quality report (stored by the saver once its pages are all loaded) and when it was computed.

    404 when there is no such run; 409 while the run has no report, with the reason.
    """
    row = run_joined(db, run, "run_quality", "report, computed_at")
    if row["report"] is None:
        if row["status"] in (RunStatus.LOADED, RunStatus.UPLOAD_PENDING, RunStatus.SUCCEEDED):
            why = "the saver is computing it (a run whose report failed, or loaded before reports existed, has none)"
        else:
            why = f"the run is {row['status']}; the saver computes it once the run's pages are all loaded"
        raise HTTPException(409, f"run {row['run_id']} has no quality report yet: {why}")
    report = orjson.loads(row["report"])  # a few KB, whatever the size of the run
    report["computed_at"] = row["computed_at"]
    report["schema"] = schema_summary(db, row["run_id"])
    return raw_json(orjson.dumps(report))


@router.post(
    "/etl_runs",
    summary="Ask the extractor to start a run now",
    status_code=202,
    response_model=RunRequested,
    responses={**error(409, "A run is already queued or going"), **error(503, "Redis is not reachable")},
)
def start_run(request: Request, db: DbDep) -> Response:
    """Queue a run-now command for the extractor; 409 while a run is queued or going, 503 when Redis is unreachable."""
    queue: commands.CommandQueue = request.app.state.commands

    def run_status(run_id: str) -> str | None:
        # Unreadable now: the run counts as going; the claim's TTL bounds that.
        try:
            status = db.scalar("SELECT status FROM etl_runs WHERE run_id = ?", [run_id])
        except db.unreadable:
            return None
        return str(status) if status is not None else None

    try:
        request_id = queue.request_run(run_status, tracing.current_traceparent())
    except commands.RunInProgress as exc:
        raise HTTPException(409, str(exc)) from exc
    except redis.RedisError as exc:
        raise HTTPException(503, "the command queue (Redis) is not reachable") from exc
    return json_response(
        {"request_id": request_id, "status": "accepted", "detail": "the extractor will start the run"}, 202
    )
