"""What every ``etl`` command shares: the options, the API call with its exit code, and the output (text or JSON)."""

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import typer

from etlctl import client as c


@dataclass
class Context:
    """The options every command shares."""

    api: c.Api
    json: bool


def context(ctx: typer.Context) -> Context:
    """The shared options, set by the ``etl`` callback."""
    obj: Context = ctx.obj
    return obj


def fail(message: str, code: int) -> NoReturn:
    """``error: message`` on standard error, then exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The API's answer, or the error on standard error and its exit code."""
    try:
        return fn(*args, **kwargs)
    except c.ApiError as exc:
        fail(str(exc), exc.code)


def out(ctx: Context, value: Any, text: str) -> None:
    """``value`` as JSON with ``--json``, else ``text`` for people."""
    typer.echo(json.dumps(value, indent=2) if ctx.json else text)
