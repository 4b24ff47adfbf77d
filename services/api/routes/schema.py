"""The observed schema of a run's users, its data-contract report and its drift against the previous run."""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Response

from api.db import Database
from api.deps import AUTH_ERRORS, AuthDep, DbDep, error, raw_json
from api.models import NO_CONTROL, ObservedSchema
from api.routes.runs import run_joined

router = APIRouter(tags=["runs"], dependencies=[AuthDep], responses=AUTH_ERRORS)


def run_schema(db: Database, run: str) -> dict[str, Any] | None:
    """The run's recorded schema and drift (``ObservedSchema``); None while it has none. 404 for no such run."""
    row = run_joined(db, run, "run_schema", "schema, drift, previous_run_id, computed_at")
    if row["schema"] is None:
        return None
    return {
        "run_id": row["run_id"],
        "computed_at": row["computed_at"],
        **orjson.loads(row["schema"]),
        "previous_run_id": row["previous_run_id"],
        "drift": orjson.loads(row["drift"]),
    }


@router.get(
    "/etl_runs/{run}/schema",
    summary="The run's observed schema, data-contract report and drift",
    response_model=ObservedSchema,
    responses={**error(404, "No such run"), **error(409, "The run has no schema yet (its pages are not all loaded)")},
)
async def get_schema(
    db: DbDep,
    run: Annotated[str, Path(description="the integer id, or the run_id text", max_length=200, pattern=NO_CONTROL)],
) -> Response:
    """Each field path of the run's users with its JSON types, nulls and missing counts; how the records kept to
    the data contract; the changes against the previous succeeded run (docs/contracts.md).

    404 when there is no such run; 409 until its pages are all loaded (or for a run loaded before schemas
    were recorded).
    """
    found = run_schema(db, run)
    if found is None:
        raise HTTPException(409, f"run {run} has no observed schema yet: the saver records it once the run is loaded")
    return raw_json(orjson.dumps(found))
