"""Liveness, readiness (the database is readable) and Prometheus metrics; open without a token."""

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import DbDep, error
from api.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process answers (liveness); checks nothing else."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, responses=error(503, "The database is not readable yet"))
async def readyz(db: DbDep) -> dict[str, str]:
    """Ready when the database file exists and `etl_runs` can be read; 503 otherwise."""
    try:
        db.scalar("SELECT count(*) FROM etl_runs")
    except db.unreadable as exc:
        raise HTTPException(503, "database not readable") from exc
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """The metrics of this API process in the Prometheus text format (each uvicorn worker counts its own)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
