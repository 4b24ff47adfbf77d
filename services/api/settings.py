"""API settings."""

from pydantic import Field, SecretStr

from etl_common.settings import BaseEtlSettings


class ApiSettings(BaseEtlSettings):
    """Database, authentication and CORS."""

    db_path: str = "database/data.db"
    # Bearer token for data and command routes; required unless api_auth is "none".
    api_token: SecretStr | None = None
    api_auth: str = Field("token", pattern="^(token|none)$")
    # Comma-separated origins allowed by CORS (the frontend).
    api_cors_origins: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
