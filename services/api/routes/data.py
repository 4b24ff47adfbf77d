"""Records of a run: ``/data/raw_users``, ``/data/processed_users`` and ``/data/invalid_users``."""

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from api import records
from api.deps import AUTH_ERRORS, AuthDep, DbDep, raw_json
from api.models import RecordPage

router = APIRouter(tags=["records"], dependencies=[AuthDep], responses=AUTH_ERRORS)

_TOTAL = {"X-Total-Count": {"description": "records matching the filters", "schema": {"type": "integer"}}}
RunId = Annotated[str | None, Query(max_length=200, description="only this run's records (etl_runs.run_id)")]
Search = Annotated[str | None, Query(max_length=100, description="substring of first/last name, email or username")]
Department = Annotated[str | None, Query(max_length=100, description="department name (any case)")]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Order = Literal["asc", "desc"]


def _serve(table: records.Table):
    """One route per table, so each documents exactly its own sortable columns."""
    sort_type: Any = Literal[table.sortable]  # type: ignore[valid-type]
    description = "`source` is the order the source returned the records in; ties keep source order"

    async def handler(
        db: DbDep,
        run_id: RunId = None,
        q: Search = None,
        department: Department = None,
        sort: Annotated[sort_type, Query(description=description)] = "source",
        order: Order = "asc",
        limit: Limit = 50,
        offset: Offset = 0,
        department_code: Annotated[str | None, Query(max_length=20)] = None,
    ) -> Response:
        query = records.Query(run_id, q, department, department_code, sort, order == "desc", limit, offset)
        version = db.version()
        # Off the event loop: a search or a sort may scan a whole run.
        body, total = await run_in_threadpool(_page, db, table, query, version)
        return raw_json(body, {"X-Total-Count": str(total)})

    if not table.has_code:
        # department_code exists only on processed_users; keep it out of the other tables' documents.
        async def plain(db: DbDep, run_id: RunId = None, q: Search = None, department: Department = None,
                        sort: Annotated[sort_type, Query(description=description)] = "source",
                        order: Order = "asc", limit: Limit = 50, offset: Offset = 0) -> Response:
            return await handler(db, run_id, q, department, sort, order, limit, offset, None)

        return plain
    return handler


def _page(db, table: records.Table, query: records.Query, version: int) -> tuple[bytes, int]:
    result = records.page(db, table, query, version)
    return orjson.dumps(result), result["total"]


for _table in records.TABLES.values():
    router.add_api_route(
        f"/data/{_table.name}", _serve(_table), methods=["GET"], response_model=RecordPage,
        summary=f"Records of {_table.name}, paged", name=f"data_{_table.name}",
        responses={200: {"headers": _TOTAL}},
    )
