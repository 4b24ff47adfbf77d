"""Settings base shared by every service: read from the environment (prefix ETL_) and a .env file."""

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

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
    # The run-now claim (one run queued or going) lapses after this long without its run reaching a final
    # state (a crashed extractor or saver): set by the API, renewed when the run starts and ends extraction.
    run_claim_ttl_s: float = Field(3600.0, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        """Parsed as redis-py will (scheme, port): a malformed URL is a setting error, not a traceback later."""
        if BAD_ESCAPE.search(url):  # redis-py would decode it silently into a password that never matches
            raise ValueError(
                "malformed: a '%' not followed by two hex digits; percent-encode the password's special characters "
                "(% is %25, @ is %40, : is %3A, / is %2F)"
            )
        try:
            parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            # The parser's messages name the part at fault, never the password; redacted all the same.
            reason = str(exc).replace(_password(url), "***") if _password(url) else str(exc)
            raise ValueError(
                f"expected redis://[[user]:password@]host[:port][/db], rediss:// or unix://: {reason}"
            ) from None
        return url


# A '%' not followed by two hex digits: a password's special character left unencoded in a URL (any of ours).
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USERINFO = re.compile(r"^(?P<head>[^/]*//[^/@:]*:)(?P<password>[^@]*)@")


def _password(url: str) -> str:
    m = _USERINFO.match(url)
    return m.group("password") if m else ""


# libpq takes the login's password and the client key's as URL parameters too (?password=...&sslpassword=...).
_SECRET_PARAMETER = re.compile(r"(?P<name>[?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its passwords, if any, as ``***`` (``redis://:***@host:6379/0``, ``...?password=***``)."""
    url = _USERINFO.sub(lambda m: f"{m.group('head')}***@", url, count=1)
    return _SECRET_PARAMETER.sub(lambda m: f"{m.group('name')}***", url)


SECRET_WORDS = ("token", "key", "passphrase", "password")


def shown(name: str, value: object) -> str:
    """A setting's value as a message may show it: secrets hidden, a URL's password redacted."""
    lower = name.lower()
    if any(w in lower for w in SECRET_WORDS):
        return "<hidden>"
    if lower.endswith("url") and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


def from_env_file(message: str, env_file: str | Path | None = ".env", environ: Mapping[str, str] = os.environ) -> str:
    """A note naming the settings of ``message`` (by name or value) whose value came from ``env_file``, else "".

    ``" (ETL_ENCRYPTION_RECIPIENTS_FILE='/run/secrets/age/recipients.txt' came from .env: fix or remove it there)"``:
    a value copied from .env.example is found where it was set, not only where it failed.
    """
    if env_file is None or not Path(env_file).is_file():
        return ""
    named = []
    for name, value in dotenv_values(env_file).items():
        if not name.upper().startswith(ENV_PREFIX) or name in environ or not value:
            continue
        secret = shown(name, value) == "<hidden>"
        if name in message or (not secret and len(value) >= 4 and value in message):
            named.append(name if secret else f"{name}={shown(name, value)}")
    if not named:
        return ""
    return f" ({', '.join(named)} came from {env_file}: fix or remove {'it' if len(named) == 1 else 'them'} there)"


S = TypeVar("S", bound=BaseSettings)


def describe(exc: ValidationError, env_file: str | Path | None = None) -> str:
    """One line for a settings error: each bad variable, the value given and what is expected.

    ``ETL_PAGE_SIZE='abc': expected a valid integer, unable to parse string as an integer``;
    several errors are joined with ``; ``. Values of secret fields are never shown, a URL's password neither.
    A value that came from ``env_file`` rather than the environment is said to (``from_env_file``).
    """
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if isinstance(p, str)]
        expected = _expected(err)
        if not loc:  # a rule across fields (model validator): its message names the variables
            parts.append(expected)
            continue
        name = ENV_PREFIX + loc[0].upper()
        parts.append(f"{name}={shown(name, err.get('input'))}: {expected}")
    line = "; ".join(parts)
    return line + from_env_file(line, env_file)


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
        source = env_file if isinstance(env_file, (str, Path)) else None
        print(f"invalid setting: {describe(exc, source)}", file=sys.stderr)
        raise SystemExit(2) from None
