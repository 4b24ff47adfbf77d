"""Summaries for the charts: by department, gender, age band, device, and valid vs invalid per run."""

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from api import summary
from api.db import Database
from api.deps import AUTH_ERRORS, AuthDep, DbDep, error, raw_json, run_id_of
from api.models import NO_CONTROL, Summary

router = APIRouter(tags=["summary"], dependencies=[AuthDep], responses=AUTH_ERRORS)


@router.get("/summary", summary="Counts for the charts", response_model=Summary, responses=error(404, "No such run"))
async def get_summary(
    db: DbDep,
    run_id: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NO_CONTROL,
            description="the run: its integer id or its run_id text (default: the latest run with data)",
        ),
    ] = None,
) -> Response:
    """Counts of one run's valid records by department, gender, age band and device; valid/invalid of recent runs.

    The run is `run_id` (its integer id or its run_id text, as in /etl_runs/{run}), by default the latest
    run with valid records; 404 when `run_id` names no run.
    """
    if run_id is not None:
        run_id = run_id_of(db, run_id)
    version = db.version()
    key = ("summary", run_id)
    hit = db.cache_get(key, version)
    if hit is None:
        # One computation per key at a time: concurrent misses wait for it rather than all scanning.
        if len(_locks) > 1000:
            _locks.clear()  # bounded; at worst two requests compute the same answer once
        async with _locks.setdefault(key, asyncio.Lock()):
            hit = db.cache_get(key, version)
            if hit is None:
                # A miss scans an index over the whole run: done off the event loop, then cached.
                hit = await run_in_threadpool(_compute, db, run_id)
                db.cache_put(key, version, hit)
    if hit is _NO_RUN:
        raise HTTPException(404, f"no run {run_id!r}")
    return raw_json(hit)


_NO_RUN = b""
_locks: dict[tuple[str, str | None], asyncio.Lock] = {}


def _compute(db: Database, run_id: str | None) -> bytes:
    if run_id is None:
        run_id = summary.latest_run_with_data(db)
    elif db.scalar("SELECT 1 FROM etl_runs WHERE run_id = ?", (run_id,)) is None:
        return _NO_RUN
    return orjson.dumps(summary.summarise(db, run_id))
