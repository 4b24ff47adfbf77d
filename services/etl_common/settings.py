"""Settings base shared by every service: read from the environment (prefix ETL_) and a .env file."""

import re
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from etl_common.setting_names import given, warn_misspelt

ENV_PREFIX = "ETL_"


class BaseEtlSettings(BaseSettings):
    """What every service needs: Redis, key prefix, logs and the ops port."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "etl:"
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|debug|info|warning|error)$")
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


S = TypeVar("S", bound=BaseSettings)


def describe(exc: ValidationError) -> str:
    """One line for a settings error: each bad variable, the value given and what is expected.

    ``ETL_PAGE_SIZE='abc': expected a valid integer, unable to parse string as an integer``;
    several errors are joined with ``; ``. Values of secret fields are never shown.
    """
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if isinstance(p, str)]
        expected = _expected(err)
        if not loc:  # a rule across fields (model validator): its message names the variables
            parts.append(expected)
            continue
        name = ENV_PREFIX + loc[0].upper()
        secret = any(w in loc[0] for w in ("token", "key", "passphrase", "password"))
        value = "<hidden>" if secret else repr(err.get("input"))
        parts.append(f"{name}={value}: {expected}")
    return "; ".join(parts)


def _expected(err: Any) -> str:
    if err["type"] == "string_pattern_mismatch":
        choices = re.fullmatch(r"\^\(([\w|]+)\)\$", str(err.get("ctx", {}).get("pattern", "")))
        if choices:
            return "expected one of " + ", ".join(dict.fromkeys(c.lower() for c in choices.group(1).split("|")))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return re.sub(r"^Input should be ", "expected ", msg)


def load(cls: type[S], **values: Any) -> S:
    """``cls(**values)`` read from the environment; on a bad value, one line on stderr and exit code 2.

    A misspelt ETL_* name (close to one of ``cls``'s and no other service's) gets one warning line.
    """
    env_file = values.get("_env_file", cls.model_config.get("env_file"))
    prefix = str(cls.model_config.get("env_prefix") or "").upper()
    own = {prefix + name.upper() for name in cls.model_fields}
    warn_misspelt(given(env_file if isinstance(env_file, (str, Path)) else None), own)
    try:
        return cls(**values)
    except ValidationError as exc:
        print(f"invalid setting: {describe(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
