"""``etl runs``: list, show, start and follow runs with their progress."""

import time
from typing import Annotated, Any

import typer

from etlctl import client as c
from etlctl.common import Context, call, context, fail, out

app = typer.Typer(help="Runs: list, show, start, follow.", no_args_is_help=True)
FINAL = ("succeeded", "failed")


def _run_line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']:>5}  {r['run_id']:<24} {r['status']:<15} {r.get('raw_count', 0):>8} raw "
        f"{r['valid_count']:>8} valid {r['invalid_count']:>6} invalid  {r.get('started_at') or ''}"
    )


# --- runs -------------------------------------------------------------------------------------------------------


@app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Runs, newest first."""
    o = context(ctx)
    runs = call(o.api.get, "/etl_runs", status=status, limit=limit)
    out(o, runs, "\n".join(_run_line(r) for r in runs) or "no runs")


@app.command("show")
def runs_show(ctx: typer.Context, run: Annotated[str, typer.Argument(help="The run's id or run_id.")]) -> None:
    """One run: counts, pages, timings, error, warnings, files, dead letters."""
    o = context(ctx)
    r = call(o.api.get, f"/etl_runs/{run}")
    lines = [
        _run_line(r),
        f"pages {r['pages_loaded']}/{r['pages_expected'] or '?'}, duration {r['duration_s'] or '-'} s, "
        f"dead letters {r['dead_letters']}",
    ]
    lines += [f"error: {r['error']}"] if r["error"] else []
    lines += [f"warning: {w}" for w in r["warnings"]]
    lines += [
        f"file {f['kind']:<9} {f['name']} {f['bytes']} bytes -> {f['remote_path'] or '(not uploaded)'}"
        for f in r["files"]
    ]
    out(o, r, "\n".join(lines))


def _progress(r: dict[str, Any]) -> str:
    total = r.get("total_expected")
    users = f"{r['raw_count']:,}/{total:,}" if isinstance(total, int) else f"{r['raw_count']:,}"
    return f"{r['run_id']} {r['status']}: page {r['pages_loaded']}/{r['pages_expected'] or '?'}, {users} users"


def _follow(o: Context, run: str, timeout_s: float, interval_s: float) -> dict[str, Any]:
    """Poll the run until it is final; one progress line per change (standard error with --json)."""
    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        r: dict[str, Any] = call(o.api.get, f"/etl_runs/{run}")
        line = _progress(r)
        if line != last:
            typer.echo(line, err=o.json)
            last = line
        if r["status"] in FINAL:
            return r
        if time.monotonic() >= deadline:
            out(o, r, f"still {r['status']} after {timeout_s:g} s")
            raise typer.Exit(c.FAILED)
        time.sleep(interval_s)


def _finish(o: Context, r: dict[str, Any]) -> None:
    out(o, r, f"{r['run_id']} {r['status']}" + (f": {r['error']}" if r["error"] else ""))
    raise typer.Exit(c.OK if r["status"] == "succeeded" else c.FAILED)


@app.command("follow")
def runs_follow(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Argument(help="The run (default: the newest).")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (exit 1).")] = 3600.0,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.05)] = 1.0,
) -> None:
    """Follow a run until it ends, with its progress; exit 0 when it succeeded, 1 when it failed or timed out."""
    o = context(ctx)
    if run is None:
        newest = call(o.api.get, "/etl_runs", limit=1)
        if not newest:
            fail("no runs yet", c.NOT_FOUND)
        run = str(newest[0]["run_id"])
    _finish(o, _follow(o, run, timeout, interval))


@app.command("start")
def runs_start(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", help="Wait for the run and follow it to its end.")] = False,
    timeout: Annotated[float, typer.Option(help="With --follow: give up after this many seconds.")] = 3600.0,
    interval: Annotated[float, typer.Option(help="With --follow: seconds between polls.", min=0.05)] = 1.0,
) -> None:
    """Ask the extractor for a run now (exit 4 while a run is queued or going)."""
    o = context(ctx)
    before = call(o.api.get, "/etl_runs", limit=1)
    newest_id = before[0]["id"] if before else 0
    accepted = call(o.api.request, "POST", "/etl_runs")
    if not follow:
        out(o, accepted, f"accepted: request {accepted['request_id']}; the extractor will start the run")
        return
    typer.echo(f"accepted: request {accepted['request_id']}; waiting for the run", err=True)
    deadline = time.monotonic() + timeout
    while True:
        runs = call(o.api.get, "/etl_runs", limit=1)
        if runs and runs[0]["id"] > newest_id:
            break
        if time.monotonic() >= deadline:
            fail(f"no run started within {timeout:g} s", c.FAILED)
        time.sleep(interval)
    _finish(o, _follow(o, str(runs[0]["run_id"]), max(0.0, deadline - time.monotonic()), interval))
