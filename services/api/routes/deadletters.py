"""Dead letters: listed with their reasons (read token), replayed or dropped (operator token), each action audited."""

from collections.abc import Callable
from typing import Annotated, Literal

import redis
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api import commands
from api.deps import AUTH_ERRORS, AuthDep, OperatorDep, error, json_response
from api.models import NO_CONTROL
from etl_common import deadletters

router = APIRouter(tags=["dead letters"], responses={**AUTH_ERRORS, **error(503, "Redis is not reachable")})

_ENTRY_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"


class DeadLetter(BaseModel):
    """One entry of the dead-letter stream."""

    id: str = Field(description="the dead letter's own id (what replay and drop take)")
    run_id: str = Field(description="the run of the entry; empty when it could not be told")
    stream: str = Field(description="the stream the entry came from (a replay puts it back there)")
    entry_id: str = Field(description="its id on that stream")
    group: str = Field(description="the consumer group that gave up on it")
    reason: str
    deliveries: int
    dead_at: str
    bytes: int


class Selection(BaseModel):
    """Which dead letters: ``ids``, or every one of ``run_id``, or ``all``; exactly one of the three."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(pattern=_ENTRY_ID)]] = Field(default_factory=list, max_length=10_000)
    run_id: str | None = Field(None, min_length=1, max_length=200, pattern=NO_CONTROL)
    all: bool = False
    actor: str = Field("api", min_length=1, max_length=100, pattern=NO_CONTROL, description="recorded in the audit")

    @model_validator(mode="after")
    def _one_selector(self) -> "Selection":
        given = [bool(self.ids), self.run_id is not None, self.all]
        if sum(given) != 1:
            raise ValueError("give exactly one of ids, run_id or all=true")
        return self


class Outcome(BaseModel):
    id: str
    status: Literal["done", "missing", "empty", "bad_stream"]
    run_id: str
    stream: str
    new_id: str


class ActionResult(BaseModel):
    action: Literal["replay", "drop"]
    done: int = Field(description="dead letters replayed or dropped")
    results: list[Outcome]


def _queue(request: Request) -> commands.CommandQueue:
    queue: commands.CommandQueue = request.app.state.commands
    return queue


@router.get(
    "/dead_letters", summary="Dead letters with their reasons", response_model=list[DeadLetter], dependencies=[AuthDep]
)
def list_dead_letters(
    request: Request,
    run_id: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_CONTROL)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """The dead letters, oldest first (only those of `run_id` when given), at most `limit`."""
    queue = _queue(request)
    try:
        return json_response(deadletters.listing(queue.client, queue.keys, run_id, limit))
    except redis.RedisError as exc:
        raise HTTPException(503, "the dead-letter stream (Redis) is not reachable") from exc


@router.get("/dead_letters/audit", summary="What was done with dead letters, newest first", dependencies=[AuthDep])
def audit(request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Response:
    """Each replay, drop or expiry (retention): action, dead-letter id, run, stream, new id, actor, time, reason."""
    queue = _queue(request)
    try:
        return json_response(deadletters.audit(queue.client, queue.keys, limit))
    except redis.RedisError as exc:
        raise HTTPException(503, "the dead-letter stream (Redis) is not reachable") from exc


def _action(action: str) -> Callable[[Request, Selection], Response]:
    """The handler of ``POST /dead_letters/{action}``."""

    def handler(request: Request, body: Selection) -> Response:
        queue = _queue(request)
        try:
            ids = deadletters.select(queue.client, queue.keys, body.ids, "*" if body.all else body.run_id)
            results = deadletters.act(queue.client, queue.keys, action, ids, actor=body.actor)
        except redis.RedisError as exc:
            raise HTTPException(503, "the dead-letter stream (Redis) is not reachable") from exc
        done = sum(r["status"] == "done" for r in results)
        return json_response({"action": action, "done": done, "results": results})

    return handler


_ACTIONS = {
    "replay": (
        "Put dead letters back onto the stream they came from",
        "Replay the dead letters chosen (operator token). A page already loaded adds nothing (the saver's page "
        "ledger); a dead letter already replayed or dropped is `missing`. The run of replayed pages leaves `failed` "
        "to complete.",
    ),
    "drop": (
        "Remove dead letters for good",
        "Drop the dead letters chosen (operator token); each drop is recorded in the audit stream.",
    ),
}
for _name, (_summary, _description) in _ACTIONS.items():
    router.add_api_route(
        f"/dead_letters/{_name}",
        _action(_name),
        methods=["POST"],
        summary=_summary,
        description=_description,
        name=f"dead_letters_{_name}",
        response_model=ActionResult,
        dependencies=[OperatorDep],
        responses=error(403, "The token is not the operator token"),
    )
