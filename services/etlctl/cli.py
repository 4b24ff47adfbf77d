"""The ``etl`` commands: each talks to the API over HTTP (ETL_API_URL, ETL_API_TOKEN), ``--json`` for scripts."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from etlctl import client as c
from etlctl import deadletters, retention, runs
from etlctl.checks import run_checks
from etlctl.common import Context, call, context, fail, out

app = typer.Typer(
    name="etl",
    help="Operate the ETL: runs, quality, exports, dead letters, retention, decrypt, check. "
    "Exit codes: 0 done, 1 failed, 2 bad usage, 3 not found, 4 conflict, 5 refused (token), 6 API unreachable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(runs.app, name="runs")
app.add_typer(deadletters.app, name="dead-letters", no_args_is_help=True)
app.add_typer(retention.app, name="retention", no_args_is_help=True)


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


# --- quality and export -----------------------------------------------------------------------------------------


@app.command()
def quality(ctx: typer.Context, run: Annotated[str, typer.Argument(help="The run's id or run_id.")]) -> None:
    """The run's data-quality report (exit 4 while it has none)."""
    o = context(ctx)
    q = call(o.api.get, f"/etl_runs/{run}/quality")
    rules = ", ".join(f"{k} {v}" for k, v in (q.get("rules") or {}).items() if v)
    out(
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
    o = context(ctx)
    if fmt not in ("csv", "parquet"):
        fail(f"--format {fmt!r}: expected csv or parquet", c.USAGE)
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
        fail(str(exc), exc.code)
    if str(output) != "-":
        out(o, {"table": table, "format": fmt, "output": str(output), "bytes": size}, f"{output}: {size} bytes")


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
        fail("decrypt needs the saver package: install the project (pipx install .) or run it in the saver's pod", 1)
    raise typer.Exit(saver_main(["decrypt", "-i", str(identity), str(input_file), str(output)]))


@app.command()
def check(ctx: typer.Context, timeout: Annotated[float, typer.Option(help="Seconds per check.")] = 5.0) -> None:
    """Can this machine reach Redis, the source, SFTP, the database and the API (the services' settings): one line
    each; exit 1 when one cannot be reached."""
    o = context(ctx)
    checks = run_checks(o.api.url, timeout)
    mark = {True: "ok  ", False: "FAIL", None: "--  "}
    text = "\n".join(f"{mark[k.ok]} {k.name:<9} {k.detail} ({k.ms:g} ms)" for k in checks)
    out(o, [k.as_dict() for k in checks], text)
    raise typer.Exit(c.FAILED if any(k.ok is False for k in checks) else c.OK)
