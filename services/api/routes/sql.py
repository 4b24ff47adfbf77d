"""The SQL console (``POST /query_sql``): one read-only SELECT over the typed columns, limited in rows and time."""

from fastapi import APIRouter, HTTPException, Response

from api.db import NotReady
from api.deps import AUTH_ERRORS, AuthDep, DbDep, SettingsDep, error, json_response
from api.models import SqlQuery, SqlResult
from api.sqlconsole import QueryRefused, run_query

router = APIRouter(tags=["sql"], dependencies=[AuthDep], responses=AUTH_ERRORS)


@router.post(
    "/query_sql",
    summary="Run one read-only SELECT",
    response_model=SqlResult,
    responses=error(400, "The statement is refused, malformed or ran out of time"),
)
def query_sql(body: SqlQuery, db: DbDep, settings: SettingsDep) -> Response:
    """Run one read-only SELECT over the typed columns (docs/api.md, "The SQL console").

    Rows and bytes beyond `ETL_API_SQL_MAX_ROWS` and `ETL_API_SQL_MAX_BYTES` are cut (`truncated: true`);
    a refused statement, or one running past `ETL_API_SQL_TIMEOUT_MS`, is answered 400 with the reason.
    """
    # A plain def: FastAPI runs it in its thread pool, and the time limit bounds how long it holds a thread.
    if not db.path.exists():
        raise NotReady("the database does not exist yet; no run has been loaded")
    try:
        result = run_query(
            db.path, body.query, settings.api_sql_max_rows, settings.api_sql_timeout_ms, settings.api_sql_max_bytes
        )
    except QueryRefused as exc:
        raise HTTPException(400, str(exc)) from exc
    return json_response(
        {"columns": result.columns, "rows": result.rows, "truncated": result.truncated, "elapsed_ms": result.elapsed_ms}
    )
