"""Settings base shared by every service: read from the environment (prefix ETL_) and a .env file."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BaseEtlSettings(BaseSettings):
    """What every service needs: Redis, key prefix, logs and the ops port."""

    model_config = SettingsConfigDict(env_prefix="ETL_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "etl:"
    log_level: str = "INFO"
    log_format: str = Field("auto", pattern="^(auto|json|console)$")
    # Port of the /metrics, /healthz and /readyz endpoint of a worker; 0 disables it.
    ops_port: int = Field(0, ge=0, le=65535)
    ops_host: str = "127.0.0.1"
    # XREADGROUP BLOCK must stay well under redis-py's socket timeout (5 s).
    block_ms: int = Field(1000, ge=10, le=4000)
    # Idle time after which a pending entry of a dead consumer is claimed.
    claim_idle_ms: int = Field(30_000, ge=100)
    # Deliveries after which an entry is moved to the dead-letter stream.
    max_deliveries: int = Field(5, ge=1)
    # Name of this consumer in its group; defaults to the host name (the pod name).
    consumer_name: str = ""
    # Heartbeat older than this makes /healthz fail.
    heartbeat_stale_s: float = Field(60.0, gt=0)
