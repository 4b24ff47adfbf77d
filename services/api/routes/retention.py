"""Retention: the saver's reports (read token) and a plan or an application on demand (operator token)."""

import uuid
from typing import Annotated, Any

import orjson
import redis
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api import commands
from api.deps import AUTH_ERRORS, AuthDep, DbDep, OperatorDep, error, json_response
from api.models import NO_CONTROL
from etl_common import streams
from etl_common.clock import utc_iso
from etl_common.runs import EventType

router = APIRouter(tags=["retention"], responses=AUTH_ERRORS)


class RetentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apply: bool = Field(False, description="false: a plan (dry run) only; true: remove what the settings say")


class RetentionRequested(BaseModel):
    request_id: str
    status: str
    detail: str


@router.get("/retention", summary="Retention reports, newest first", dependencies=[AuthDep])
def reports(
    db: DbDep,
    request_id: Annotated[str | None, Query(min_length=1, max_length=100, pattern=NO_CONTROL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Response:
    """What each application or plan (dry run) of retention removed or would remove: runs, rows, files, remote files,
    dead letters, bytes freed, errors (`request_id` picks the answer to one request)."""
    where, args = ("WHERE request_id = ?", [request_id]) if request_id else ("", [])
    rows = db.dicts(f"SELECT id, report FROM retention_log {where} ORDER BY id DESC LIMIT ?", [*args, limit])
    out: list[dict[str, Any]] = [{"id": r["id"], **orjson.loads(r["report"])} for r in rows]
    return json_response(out)


@router.post(
    "/retention",
    summary="Ask the saver for a retention plan, or to apply retention now",
    status_code=202,
    response_model=RetentionRequested,
    dependencies=[OperatorDep],
    responses={**error(403, "The token is not the operator token"), **error(503, "Redis is not reachable")},
)
def request_retention(request: Request, body: RetentionRequest) -> Response:
    """Queue a `retention_requested` event for the saver (the only database writer); its report appears under
    `GET /retention?request_id=...` once done."""
    queue: commands.CommandQueue = request.app.state.commands
    request_id = uuid.uuid4().hex
    event = {
        "type": str(EventType.RETENTION_REQUESTED),  # a request to the saver, about no run (etl_common.runs)
        "request_id": request_id,
        "dry_run": not body.apply,
        "trigger": "api",
        "requested_at": utc_iso(),
    }
    try:
        queue.client.xadd(queue.keys.events_stream, streams.encode(event), maxlen=100_000, approximate=True)
    except redis.RedisError as exc:
        raise HTTPException(503, "the saver's event stream (Redis) is not reachable") from exc
    what = "apply retention" if body.apply else "plan retention (nothing is removed)"
    return json_response({"request_id": request_id, "status": "accepted", "detail": f"the saver will {what}"}, 202)
