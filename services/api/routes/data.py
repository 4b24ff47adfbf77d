"""Records of a run: ``/data/raw_users``, ``/data/processed_users``, ``/data/invalid_users``, and their exports.

``/data/{table}.csv`` and ``/data/{table}.parquet`` take the same filters and stream every row of
the selection (typed columns only) as a download.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError, create_model
from starlette.concurrency import run_in_threadpool

from api import exports, records
from api.db import Database
from api.deps import AUTH_ERRORS, AuthDep, raw_json, run_id_of
from api.models import NO_CONTROL, RecordPage

router = APIRouter(tags=["records"], dependencies=[AuthDep], responses=AUTH_ERRORS)

DEPARTMENT_MAX = 1000  # characters of the department filter (the console's DEPARTMENT_MAX says the same)
_TOTAL = {"X-Total-Count": {"description": "records matching the filters", "schema": {"type": "integer"}}}


class _Params(BaseModel):
    """Query parameters shared by the three tables (one model: FastAPI validates it in one pass)."""

    run_id: str | None = Field(
        None,
        max_length=200,
        pattern=NO_CONTROL,
        description="only this run's records: its integer id or its run_id text (as in /etl_runs/{run})",
    )
    q: str | None = Field(
        None, max_length=100, pattern=NO_CONTROL, description="substring of first/last name, email or username"
    )
    # As long as a department name a person would pick from a list (the console offers the run's departments).
    department: str | None = Field(
        None, max_length=DEPARTMENT_MAX, pattern=NO_CONTROL, description="department name (any case)"
    )
    sort: str = "source"  # narrowed to the table's sortable columns by _params_model
    order: Literal["asc", "desc"] = "asc"
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=10_000_000)


def _params_model(table: records.Table) -> type[_Params]:
    """The table's own parameters: its sortable columns, and department_code where it exists."""
    fields: dict[str, Any] = {
        "sort": (
            Literal[table.sortable],
            Field("source", description="`source`: the order the source returned the records in"),
        ),
    }
    if table.has_code:
        fields["department_code"] = (
            str | None,
            Field(None, max_length=20, pattern=NO_CONTROL, description="e.g. ENG (any case)"),
        )
    return create_model(f"{table.name}_params", __base__=_Params, **fields)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI query parameters of a model, for the document (the handler validates the model itself)."""
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": prop,
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema["properties"].items()
    ]


_RAW = (
    "true: values exactly as stored, for programs; default false: text starting with = + - @ ' or a control "
    "character (tab, CR, LF, NUL...), or with = + - @ after leading spaces or invisible characters, gets a "
    "leading ' so that a spreadsheet never runs it as a formula (docs/api.md, Exports)"
)


def _export_params_model(table: records.Table, fmt: str) -> type[_Params]:
    """The table's parameters, with every row of the selection by default instead of a page of 50; CSV's ``raw``."""
    fields: dict[str, Any] = {
        "limit": (int | None, Field(None, ge=1, le=1_000_000_000, description="at most this many rows (default: all)"))
    }
    if fmt == "csv":
        fields["raw"] = (bool, Field(False, description=_RAW))
    return create_model(f"{table.name}_export_{fmt}_params", __base__=_params_model(table), **fields)


def _validated(model: type[_Params], request: Request) -> _Params:
    # One pydantic validation of the whole query string: FastAPI's per-parameter handling cost
    # more than the query and the page's serialisation together.
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in errors]) from None


def _query(params: _Params, db: Database) -> records.Query:
    return records.Query(
        run_id_of(db, params.run_id) if params.run_id is not None else None,
        params.q,
        params.department,
        getattr(params, "department_code", None),
        params.sort,
        params.order == "desc",
        params.limit or 0,
        params.offset,
    )


def _serve(table: records.Table) -> tuple[Callable[[Request], Awaitable[Response]], type[_Params]]:
    model = _params_model(table)

    async def handler(request: Request) -> Response:
        db: Database = request.app.state.db
        query = _query(_validated(model, request), db)
        version = db.version()
        if records.is_cheap(query):
            # An index walk of well under a millisecond: cheaper here than a hop to a thread.
            body, total = _page(db, table, query, version)
        else:
            # A search, filter or sort may scan a whole run: off the event loop.
            body, total = await run_in_threadpool(_page, db, table, query, version)
        return raw_json(body, {"X-Total-Count": str(total)})

    return handler, model


def _serve_export(table: records.Table, fmt: str) -> tuple[Callable[[Request], Awaitable[Response]], type[_Params]]:
    model = _export_params_model(table, fmt)

    async def handler(request: Request) -> Response:
        params = _validated(model, request)
        db: Database = request.app.state.db
        query = _query(params, db)
        # Opening the cursor runs the query's first step (a sort may scan the run): off the event loop.
        selection = await run_in_threadpool(exports.Selection, db, table, query, params.limit)
        raw = getattr(params, "raw", False)
        chunks = exports.csv_chunks(selection, raw) if fmt == "csv" else exports.parquet_chunks(selection)
        name = exports.filename(table, query, fmt)
        return StreamingResponse(
            chunks, media_type=exports.FORMATS[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    return handler, model


def _page(db: Database, table: records.Table, query: records.Query, version: int) -> tuple[bytes, int]:
    result = records.page(db, table, query, version)
    return orjson.dumps(result), result["total"]


for _table in records.TABLES.values():
    _handler, _model = _serve(_table)
    router.add_api_route(
        f"/data/{_table.name}",
        _handler,
        methods=["GET"],
        response_model=RecordPage,
        summary=f"Records of {_table.name}, paged",
        name=f"data_{_table.name}",
        responses={200: {"headers": _TOTAL}},
        openapi_extra={"parameters": _query_parameters(_model)},
    )

_DOWNLOAD = {"Content-Disposition": {"description": "attachment; filename=...", "schema": {"type": "string"}}}
for _table in records.TABLES.values():
    for _fmt, _media in exports.FORMATS.items():
        _handler, _model = _serve_export(_table, _fmt)
        router.add_api_route(
            f"/data/{_table.name}.{_fmt}",
            _handler,
            methods=["GET"],
            response_class=StreamingResponse,
            summary=f"Every selected record of {_table.name} as {_fmt.upper()} (typed columns), streamed",
            name=f"export_{_table.name}_{_fmt}",
            responses={
                200: {
                    "content": {_media.split(";")[0]: {"schema": {"type": "string", "format": "binary"}}},
                    "headers": _DOWNLOAD,
                    "description": "a download of the selection",
                }
            },
            openapi_extra={"parameters": _query_parameters(_model)},
        )
