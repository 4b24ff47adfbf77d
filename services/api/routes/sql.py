"""The SQL console (``POST /query_sql``): one read-only SELECT over the typed columns, limited in rows and time."""

from fastapi import APIRouter, HTTPException, Response

from api import sqlconsole
from api.db import NotReady
from api.deps import AUTH_ERRORS, AuthDep, DbDep, SettingsDep, error, json_response
from api.models import SqlQuery, SqlResult
from api.settings import ApiSettings
from api.sqlconsole import QueryRefused, Result
from etl_common.db import BadDatabaseUrl, DatabaseUrl

router = APIRouter(tags=["sql"], dependencies=[AuthDep], responses=AUTH_ERRORS)


@router.post(
    "/query_sql",
    summary="Run one read-only SELECT",
    response_model=SqlResult,
    responses={
        **error(400, "The statement is refused, malformed or ran out of time"),
        **error(503, "The database does not exist yet, or the console's PostgreSQL role is missing or reads too much"),
    },
)
def query_sql(body: SqlQuery, db: DbDep, settings: SettingsDep) -> Response:
    """Run one read-only SELECT over the typed columns (docs/api.md, "The SQL console").

    Rows and bytes beyond `ETL_API_SQL_MAX_ROWS` and `ETL_API_SQL_MAX_BYTES` are cut (`truncated: true`);
    a refused statement, or one running past `ETL_API_SQL_TIMEOUT_MS`, is answered 400 with the reason.
    """
    # A plain def: FastAPI runs it in its thread pool, and the time limit bounds how long it holds a thread.
    try:
        target = settings.console_database()
    except BadDatabaseUrl as exc:  # the console's own URL (the API's is checked at start-up): the console is off
        raise HTTPException(503, f"the SQL console is off: ETL_API_SQL_DATABASE_URL: {exc}") from None
    limits = (settings.api_sql_max_rows, settings.api_sql_timeout_ms, settings.api_sql_max_bytes)
    try:
        if target.engine == "postgresql":
            result = _on_postgresql(target, body.query, settings, limits)
        else:
            if db.path is None or not db.path.exists():
                raise NotReady("the database does not exist yet; no run has been loaded")
            result = sqlconsole.run_query(db.path, body.query, *limits)
    except QueryRefused as exc:
        raise HTTPException(400, str(exc)) from exc
    return json_response(
        {"columns": result.columns, "rows": result.rows, "truncated": result.truncated, "elapsed_ms": result.elapsed_ms}
    )


def _on_postgresql(target: DatabaseUrl, query: str, settings: ApiSettings, limits: tuple[int, int, int]) -> Result:
    """The console on PostgreSQL as its own role; 503 without one, or when the role reads or can do more."""
    from api import pgconsole  # psycopg: loaded by an API that reads PostgreSQL only

    if settings.api_sql_database_url is None:
        raise HTTPException(
            503,
            "the SQL console on PostgreSQL needs a role of its own: set ETL_API_SQL_DATABASE_URL "
            "(docs/scaling.md, The database engine)",
        )
    try:
        return pgconsole.run_query(target, query, *limits)
    except pgconsole.ConsoleUnsafe as exc:
        raise HTTPException(503, str(exc)) from exc
