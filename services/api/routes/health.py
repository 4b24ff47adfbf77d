"""Liveness, readiness (the database is readable) and Prometheus metrics; open without a token."""

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import DbDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DbDep) -> dict:
    try:
        db.execute("SELECT count(*) FROM etl_runs").fetchone()
    except Exception as exc:
        raise HTTPException(503, "database not readable") from exc
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
