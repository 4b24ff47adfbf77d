"""API settings: database, authentication, CORS, server and SQL console limits."""

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from etl_common.db import DatabaseUrl, DatabaseUrlSetting, parse_url
from etl_common.settings import BaseEtlSettings


class ApiSettings(BaseEtlSettings):
    """Database, authentication, CORS, uvicorn and the SQL console's limits."""

    db_path: str = "database/data.db"
    # The engine and its address (as the saver's): empty is SQLite at db_path.
    database_url: DatabaseUrlSetting = None
    # Where the API reads (a read-only role, optionally a replica); empty: database_url.
    api_database_url: DatabaseUrlSetting = None
    # PostgreSQL only: the SQL console's login, a role granted the typed columns alone (ETL_DATABASE_CONSOLE_ROLE of
    # the migrator); without it the console is refused on PostgreSQL.
    # Checked when the console runs, not at load: a malformed one turns the console off (503 naming it), not the API.
    api_sql_database_url: SecretStr | None = None
    # Bearer token for data and command routes; required unless api_auth is "none".
    api_token: SecretStr | None = None
    api_auth: str = Field("token", pattern="^(token|none)$")
    # Bearer token of operator routes (dead-letter replay and drop, retention on demand); none: they refuse all.
    api_operator_token: SecretStr | None = None
    # Comma-separated origins allowed by CORS (the frontend).
    api_cors_origins: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # uvicorn worker processes; each keeps its own read-only connections and caches.
    api_workers: int = Field(1, ge=1, le=64)
    # SQL console: rows returned at most, wall-clock limit and response size cap.
    api_sql_max_rows: int = Field(1000, ge=1, le=100_000)
    api_sql_timeout_ms: int = Field(2000, ge=10, le=60_000)
    api_sql_max_bytes: int = Field(4_000_000, ge=1000, le=100_000_000)
    # Redis commands (POST /etl_runs) fail fast rather than hang a request.
    api_redis_timeout_s: float = Field(2.0, gt=0, le=30)

    def database(self) -> DatabaseUrl:
        """Where the API reads: ``api_database_url``, else ``database_url``, else the SQLite file ``db_path``."""
        url = self.api_database_url or self.database_url
        return parse_url(url.get_secret_value() if url else "", self.db_path)

    def console_database(self) -> DatabaseUrl:
        """Where the SQL console runs: the SQLite file read by the API, or ``api_sql_database_url`` on PostgreSQL."""
        read = self.database()
        if read.engine == "sqlite" or self.api_sql_database_url is None:
            return read
        return parse_url(self.api_sql_database_url.get_secret_value(), self.db_path)

    @field_validator("api_sql_database_url")
    @classmethod
    def _console_url(cls, value: SecretStr | None) -> SecretStr | None:
        # ETL_API_SQL_DATABASE_URL= (empty, as in .env.example) is the same as unset.
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("api_cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        """Each origin as a browser sends it, or ``*`` alone: a path or a slash would never match."""
        if not value.strip():
            return ""
        origins = [o.strip() for o in value.split(",")]
        if "" in origins:
            raise ValueError("an empty origin (two commas, or one at an end); separate origins with one comma")
        if "*" in origins and len(origins) > 1:
            raise ValueError("'*' allows every origin and must stand alone")
        for origin in origins:
            if origin != "*":
                _check_origin(origin)
        return ",".join(origins)

    @model_validator(mode="after")
    def _operator_token_is_its_own(self) -> "ApiSettings":
        # The same value would let every reader replay and drop dead letters: a broken deployment, said at start-up.
        token, operator = (t.get_secret_value() if t else "" for t in (self.api_token, self.api_operator_token))
        if operator and operator == token:
            raise ValueError("ETL_API_OPERATOR_TOKEN must differ from ETL_API_TOKEN (it grants more than reading)")
        return self


def _check_origin(origin: str) -> None:
    """ValueError unless ``origin`` is ``scheme://host[:port]`` with scheme http or https."""
    expected = "an origin is scheme://host[:port], lower-case, no path or trailing slash, e.g. http://localhost:5000"
    try:
        parts = urlsplit(origin)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path
        or parts.query
        or parts.fragment
        or origin.endswith(("?", "#"))
        or origin != origin.lower()  # browsers send it lower-case, and the match is exact
        or any(c.isspace() for c in origin)
    ):
        raise ValueError(f"{origin!r} is not an origin: {expected}")
