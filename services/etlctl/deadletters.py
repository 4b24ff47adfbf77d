"""``etl dead-letters``: list with reasons, replay, drop, audit (replay and drop need the operator token)."""

from typing import Annotated, Any

import typer

from etlctl import client as c
from etlctl.common import call, context, fail, out

app = typer.Typer(help="Dead letters: list, replay, drop, audit (replay and drop need the operator token).")


@app.command("list")
def dead_list(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Option(help="Only this run's dead letters.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
) -> None:
    """Dead letters, oldest first, with their reasons."""
    o = context(ctx)
    dead = call(o.api.get, "/dead_letters", run_id=run_id, limit=limit)
    text = "\n".join(
        f"{d['id']:<16} {d['run_id'] or '-':<24} {d['stream'].rsplit(':', 1)[-1]:<10} x{d['deliveries']} {d['reason']}"
        for d in dead
    )
    out(o, dead, text or "no dead letters")


def _selection(ids: list[str] | None, run_id: str | None, everything: bool, actor: str) -> dict[str, Any]:
    if sum((bool(ids), run_id is not None, everything)) != 1:
        fail("give dead-letter ids, or --run-id, or --all (exactly one)", c.USAGE)
    body: dict[str, Any] = {"actor": actor}
    if ids:
        body["ids"] = ids
    elif run_id is not None:
        body["run_id"] = run_id
    else:
        body["all"] = True
    return body


def _act(
    ctx: typer.Context, action: str, ids: list[str] | None, run_id: str | None, everything: bool, actor: str
) -> None:
    o = context(ctx)
    result = call(
        o.api.request, "POST", f"/dead_letters/{action}", operator=True, json=_selection(ids, run_id, everything, actor)
    )
    lines = [f"{r['id']}: {r['status']}" + (f" -> {r['new_id']}" if r["new_id"] else "") for r in result["results"]]
    out(o, result, "\n".join([*lines, f"{action}: {result['done']} of {len(result['results'])} done"]))


_IDS = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (from 'etl dead-letters list').")]
_RUN = Annotated[str | None, typer.Option(help="Every dead letter of this run.")]
_ALL = Annotated[bool, typer.Option("--all", help="Every dead letter.")]
_ACTOR = Annotated[str, typer.Option(envvar="USER", help="Who acts (recorded in the audit).")]


@app.command("replay")
def dead_replay(
    ctx: typer.Context, ids: _IDS = None, run_id: _RUN = None, everything: _ALL = False, actor: _ACTOR = "cli"
) -> None:
    """Put dead letters back onto the stream they came from (a page already loaded adds nothing)."""
    _act(ctx, "replay", ids, run_id, everything, actor)


@app.command("drop")
def dead_drop(
    ctx: typer.Context, ids: _IDS = None, run_id: _RUN = None, everything: _ALL = False, actor: _ACTOR = "cli"
) -> None:
    """Remove dead letters for good (recorded in the audit)."""
    _act(ctx, "drop", ids, run_id, everything, actor)


@app.command("audit")
def dead_audit(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50) -> None:
    """What was done with dead letters, newest first."""
    o = context(ctx)
    audit = call(o.api.get, "/dead_letters/audit", limit=limit)
    text = "\n".join(
        f"{a['at']} {a['action']:<7} {a['dead_id']:<16} {a['run_id'] or '-'} by {a['actor']}" for a in audit
    )
    out(o, audit, text or "nothing done yet")
