"""``etl retention``: a plan or an application through the saver, and its reports."""

import time
from typing import Annotated, Any

import typer

from etlctl import client as c
from etlctl.common import call, context, fail, out

app = typer.Typer(help="Retention: plan (what would go), apply (operator token), reports.")


def _report_text(r: dict[str, Any]) -> str:
    removed, freed = r["removed"], r["bytes_freed"]
    rows = sum(removed["rows"].values()) if isinstance(removed["rows"], dict) else removed["rows"]
    verb = "would remove" if r["dry_run"] else "removed"
    return (
        f"{r['trigger']} {'plan' if r['dry_run'] else 'application'} at {r['finished_at']}: {verb} {rows} rows, "
        f"{removed['files']} local files ({freed['files']} bytes), {removed['remote']} remote files "
        f"({freed['remote']} bytes), {removed['dead_letters']} dead letters, {removed['headers']} run headers"
        + (f"; database pages freed {freed['database']} bytes" if not r["dry_run"] else "")
        + "".join(f"\n  error: {e}" for e in r["errors"])
    )


def _retention(ctx: typer.Context, apply: bool, wait: float) -> None:
    o = context(ctx)
    accepted = call(o.api.request, "POST", "/retention", operator=True, json={"apply": apply})
    deadline = time.monotonic() + wait
    while True:
        found = call(o.api.get, "/retention", request_id=accepted["request_id"])
        if found:
            out(o, found[0], _report_text(found[0]))
            raise typer.Exit(c.FAILED if found[0]["errors"] else c.OK)
        if time.monotonic() >= deadline:
            fail(
                f"request {accepted['request_id']} accepted; no report from the saver within {wait:g} s "
                "(is it running? see 'etl retention reports')",
                c.FAILED,
            )
        time.sleep(0.2)


_WAIT = Annotated[float, typer.Option(help="Seconds to wait for the saver's report.")]


@app.command("plan")
def retention_plan(ctx: typer.Context, wait: _WAIT = 60.0) -> None:
    """What retention would remove now (the saver measures it; nothing is removed)."""
    _retention(ctx, False, wait)


@app.command("apply")
def retention_apply(ctx: typer.Context, wait: _WAIT = 600.0) -> None:
    """Apply retention now (operator token); exit 1 when something could not be removed (e.g. SFTP down)."""
    _retention(ctx, True, wait)


@app.command("reports")
def retention_reports(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=1000)] = 10) -> None:
    """The latest retention reports (after runs, plans, applications), newest first."""
    o = context(ctx)
    reports = call(o.api.get, "/retention", limit=limit)
    out(o, reports, "\n".join(_report_text(r) for r in reports) or "no retention yet")
