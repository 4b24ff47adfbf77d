"""API settings: database, authentication, CORS, server and SQL console limits."""

from pydantic import Field, SecretStr

from etl_common.settings import BaseEtlSettings


class ApiSettings(BaseEtlSettings):
    """Database, authentication, CORS, uvicorn and the SQL console's limits."""

    db_path: str = "database/data.db"
    # Bearer token for data and command routes; required unless api_auth is "none".
    api_token: SecretStr | None = None
    api_auth: str = Field("token", pattern="^(token|none)$")
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
