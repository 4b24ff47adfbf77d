"""The ``etl`` commands: each talks to the API over HTTP (ETL_API_URL, ETL_API_TOKEN), ``--json`` for scripts."""

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from etlctl import client as c
from etlctl.checks import run_checks

app = typer.Typer(
    name="etl",
    help="Operate the ETL: runs, quality, exports, dead letters, retention, decrypt, check. "
    "Exit codes: 0 done, 1 failed, 2 bad usage, 3 not found, 4 conflict, 5 refused (token), 6 API unreachable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Runs: list, show, start, follow.", no_args_is_help=True)
dead_app = typer.Typer(help="Dead letters: list, replay, drop, audit (replay and drop need the operator token).")
retention_app = typer.Typer(help="Retention: plan (what would go), apply (operator token), reports.")
app.add_typer(runs_app, name="runs")
app.add_typer(dead_app, name="dead-letters", no_args_is_help=True)
app.add_typer(retention_app, name="retention", no_args_is_help=True)

FINAL = ("succeeded", "failed")


@dataclass
class Context:
    """The options every command shares."""

    api: c.Api
    json: bool


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="ETL_API_URL", help="The API's base URL.")] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option(envvar="ETL_API_TOKEN", help="Bearer token (read).", show_default=False)
    ] = None,
    operator_token: Annotated[
        str | None,
        typer.Option(envvar="ETL_API_OPERATOR_TOKEN", help="Bearer token of operator actions.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on standard output (for scripts).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.", min=0.1)] = 30.0,
) -> None:
    """Operate the ETL through its API."""
    ctx.obj = Context(c.Api(url, token, operator_token, timeout), as_json)


def _ctx(ctx: typer.Context) -> Context:
    obj: Context = ctx.obj
    return obj


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The API's answer, or the error on standard error and its exit code."""
    try:
        return fn(*args, **kwargs)
    except c.ApiError as exc:
        _fail(str(exc), exc.code)


def _out(ctx: Context, value: Any, text: str) -> None:
    typer.echo(json.dumps(value, indent=2) if ctx.json else text)


def _run_line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']:>5}  {r['run_id']:<24} {r['status']:<15} {r.get('raw_count', 0):>8} raw "
        f"{r['valid_count']:>8} valid {r['invalid_count']:>6} invalid  {r.get('started_at') or ''}"
    )


# --- runs -------------------------------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Runs, newest first."""
    o = _ctx(ctx)
    runs = _call(o.api.get, "/etl_runs", status=status, limit=limit)
    _out(o, runs, "\n".join(_run_line(r) for r in runs) or "no runs")


@runs_app.command("show")
def runs_show(ctx: typer.Context, run: Annotated[str, typer.Argument(help="The run's id or run_id.")]) -> None:
    """One run: counts, pages, timings, error, warnings, files, dead letters."""
    o = _ctx(ctx)
    r = _call(o.api.get, f"/etl_runs/{run}")
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
    _out(o, r, "\n".join(lines))


def _progress(r: dict[str, Any]) -> str:
    total = r.get("total_expected")
    users = f"{r['raw_count']:,}/{total:,}" if isinstance(total, int) else f"{r['raw_count']:,}"
    return f"{r['run_id']} {r['status']}: page {r['pages_loaded']}/{r['pages_expected'] or '?'}, {users} users"


def _follow(o: Context, run: str, timeout_s: float, interval_s: float) -> dict[str, Any]:
    """Poll the run until it is final; one progress line per change (standard error with --json)."""
    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        r: dict[str, Any] = _call(o.api.get, f"/etl_runs/{run}")
        line = _progress(r)
        if line != last:
            typer.echo(line, err=o.json)
            last = line
        if r["status"] in FINAL:
            return r
        if time.monotonic() >= deadline:
            _out(o, r, f"still {r['status']} after {timeout_s:g} s")
            raise typer.Exit(c.FAILED)
        time.sleep(interval_s)


def _finish(o: Context, r: dict[str, Any]) -> None:
    _out(o, r, f"{r['run_id']} {r['status']}" + (f": {r['error']}" if r["error"] else ""))
    raise typer.Exit(c.OK if r["status"] == "succeeded" else c.FAILED)


@runs_app.command("follow")
def runs_follow(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Argument(help="The run (default: the newest).")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (exit 1).")] = 3600.0,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.05)] = 1.0,
) -> None:
    """Follow a run until it ends, with its progress; exit 0 when it succeeded, 1 when it failed or timed out."""
    o = _ctx(ctx)
    if run is None:
        newest = _call(o.api.get, "/etl_runs", limit=1)
        if not newest:
            _fail("no runs yet", c.NOT_FOUND)
        run = str(newest[0]["run_id"])
    _finish(o, _follow(o, run, timeout, interval))


@runs_app.command("start")
def runs_start(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", help="Wait for the run and follow it to its end.")] = False,
    timeout: Annotated[float, typer.Option(help="With --follow: give up after this many seconds.")] = 3600.0,
    interval: Annotated[float, typer.Option(help="With --follow: seconds between polls.", min=0.05)] = 1.0,
) -> None:
    """Ask the extractor for a run now (exit 4 while a run is going)."""
    o = _ctx(ctx)
    before = _call(o.api.get, "/etl_runs", limit=1)
    newest_id = before[0]["id"] if before else 0
    accepted = _call(o.api.request, "POST", "/etl_runs")
    if not follow:
        _out(o, accepted, f"accepted: request {accepted['request_id']}; the extractor will start the run")
        return
    typer.echo(f"accepted: request {accepted['request_id']}; waiting for the run", err=True)
    deadline = time.monotonic() + timeout
    while True:
        runs = _call(o.api.get, "/etl_runs", limit=1)
        if runs and runs[0]["id"] > newest_id:
            break
        if time.monotonic() >= deadline:
            _fail(f"no run started within {timeout:g} s", c.FAILED)
        time.sleep(interval)
    _finish(o, _follow(o, str(runs[0]["run_id"]), max(0.0, deadline - time.monotonic()), interval))


# --- quality and export -----------------------------------------------------------------------------------------


@app.command()
def quality(ctx: typer.Context, run: Annotated[str, typer.Argument(help="The run's id or run_id.")]) -> None:
    """The run's data-quality report (exit 4 while it has none)."""
    o = _ctx(ctx)
    q = _call(o.api.get, f"/etl_runs/{run}/quality")
    rules = ", ".join(f"{k} {v}" for k, v in (q.get("rules") or {}).items() if v)
    _out(
        o,
        q,
        f"{q['run_id']}: {q['records']} records, {q['invalid']} invalid ({q['invalid_rate']:.1%}); "
        f"rules broken: {rules or 'none'}",
    )


@app.command()
def export(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="raw_users, processed_users or invalid_users.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write ('-': standard output).")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    run_id: Annotated[str | None, typer.Option(help="Only this run's records.")] = None,
) -> None:
    """Export a table's typed columns (never a secret) as CSV or Parquet, streamed."""
    o = _ctx(ctx)
    if fmt not in ("csv", "parquet"):
        _fail(f"--format {fmt!r}: expected csv or parquet", c.USAGE)
    size = 0
    try:
        with o.api.download(f"/data/{table}.{fmt}", {"run_id": run_id}) as resp:
            sink = sys.stdout.buffer if str(output) == "-" else output.open("wb")
            try:
                for chunk in resp.iter_bytes():
                    sink.write(chunk)
                    size += len(chunk)
            finally:
                if sink is not sys.stdout.buffer:
                    sink.close()
    except c.ApiError as exc:
        _fail(str(exc), exc.code)
    if str(output) != "-":
        _out(o, {"table": table, "format": fmt, "output": str(output), "bytes": size}, f"{output}: {size} bytes")


# --- dead letters -----------------------------------------------------------------------------------------------


@dead_app.command("list")
def dead_list(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Option(help="Only this run's dead letters.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
) -> None:
    """Dead letters, oldest first, with their reasons."""
    o = _ctx(ctx)
    dead = _call(o.api.get, "/dead_letters", run_id=run_id, limit=limit)
    text = "\n".join(
        f"{d['id']:<16} {d['run_id'] or '-':<24} {d['stream'].rsplit(':', 1)[-1]:<10} x{d['deliveries']} {d['reason']}"
        for d in dead
    )
    _out(o, dead, text or "no dead letters")


def _selection(ids: list[str] | None, run_id: str | None, everything: bool, actor: str) -> dict[str, Any]:
    if sum((bool(ids), run_id is not None, everything)) != 1:
        _fail("give dead-letter ids, or --run-id, or --all (exactly one)", c.USAGE)
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
    o = _ctx(ctx)
    result = _call(
        o.api.request, "POST", f"/dead_letters/{action}", operator=True, json=_selection(ids, run_id, everything, actor)
    )
    lines = [f"{r['id']}: {r['status']}" + (f" -> {r['new_id']}" if r["new_id"] else "") for r in result["results"]]
    _out(o, result, "\n".join([*lines, f"{action}: {result['done']} of {len(result['results'])} done"]))


_IDS = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (from 'etl dead-letters list').")]
_RUN = Annotated[str | None, typer.Option(help="Every dead letter of this run.")]
_ALL = Annotated[bool, typer.Option("--all", help="Every dead letter.")]
_ACTOR = Annotated[str, typer.Option(envvar="USER", help="Who acts (recorded in the audit).")]


@dead_app.command("replay")
def dead_replay(
    ctx: typer.Context, ids: _IDS = None, run_id: _RUN = None, everything: _ALL = False, actor: _ACTOR = "cli"
) -> None:
    """Put dead letters back onto the stream they came from (a page already loaded adds nothing)."""
    _act(ctx, "replay", ids, run_id, everything, actor)


@dead_app.command("drop")
def dead_drop(
    ctx: typer.Context, ids: _IDS = None, run_id: _RUN = None, everything: _ALL = False, actor: _ACTOR = "cli"
) -> None:
    """Remove dead letters for good (recorded in the audit)."""
    _act(ctx, "drop", ids, run_id, everything, actor)


@dead_app.command("audit")
def dead_audit(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50) -> None:
    """What was done with dead letters, newest first."""
    o = _ctx(ctx)
    audit = _call(o.api.get, "/dead_letters/audit", limit=limit)
    text = "\n".join(
        f"{a['at']} {a['action']:<7} {a['dead_id']:<16} {a['run_id'] or '-'} by {a['actor']}" for a in audit
    )
    _out(o, audit, text or "nothing done yet")


# --- retention --------------------------------------------------------------------------------------------------


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
    o = _ctx(ctx)
    accepted = _call(o.api.request, "POST", "/retention", operator=True, json={"apply": apply})
    deadline = time.monotonic() + wait
    while True:
        found = _call(o.api.get, "/retention", request_id=accepted["request_id"])
        if found:
            _out(o, found[0], _report_text(found[0]))
            raise typer.Exit(c.FAILED if found[0]["errors"] else c.OK)
        if time.monotonic() >= deadline:
            _fail(
                f"request {accepted['request_id']} accepted; no report from the saver within {wait:g} s "
                "(is it running? see 'etl retention reports')",
                c.FAILED,
            )
        time.sleep(0.2)


_WAIT = Annotated[float, typer.Option(help="Seconds to wait for the saver's report.")]


@retention_app.command("plan")
def retention_plan(ctx: typer.Context, wait: _WAIT = 60.0) -> None:
    """What retention would remove now (the saver measures it; nothing is removed)."""
    _retention(ctx, False, wait)


@retention_app.command("apply")
def retention_apply(ctx: typer.Context, wait: _WAIT = 600.0) -> None:
    """Apply retention now (operator token); exit 1 when something could not be removed (e.g. SFTP down)."""
    _retention(ctx, True, wait)


@retention_app.command("reports")
def retention_reports(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=1000)] = 10) -> None:
    """The latest retention reports (after runs, plans, applications), newest first."""
    o = _ctx(ctx)
    reports = _call(o.api.get, "/retention", limit=limit)
    _out(o, reports, "\n".join(_report_text(r) for r in reports) or "no retention yet")


# --- local commands ---------------------------------------------------------------------------------------------


@app.command()
def decrypt(
    identity: Annotated[Path, typer.Option("--identity", "-i", help="age identity file (from saver keygen).")],
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="The .age file.")],
    output: Annotated[Path, typer.Argument(help="Where to write the plaintext .jsonl.")],
) -> None:
    """Decrypt a downloaded .age file (python -m saver decrypt); OUTPUT appears only if it authenticates."""
    try:
        from saver.__main__ import main as saver_main
    except ImportError:
        _fail("decrypt needs the saver package: install the project (pipx install .) or run it in the saver's pod", 1)
    raise typer.Exit(saver_main(["decrypt", "-i", str(identity), str(input_file), str(output)]))


@app.command()
def check(ctx: typer.Context, timeout: Annotated[float, typer.Option(help="Seconds per check.")] = 5.0) -> None:
    """Can this machine reach Redis, the source, SFTP, the database and the API (the services' settings): one line
    each; exit 1 when one cannot be reached."""
    o = _ctx(ctx)
    checks = run_checks(o.api.url, timeout)
    mark = {True: "ok  ", False: "FAIL", None: "--  "}
    text = "\n".join(f"{mark[k.ok]} {k.name:<9} {k.detail} ({k.ms:g} ms)" for k in checks)
    _out(o, [k.as_dict() for k in checks], text)
    raise typer.Exit(c.FAILED if any(k.ok is False for k in checks) else c.OK)
