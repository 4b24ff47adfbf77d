"""Every ETL_* variable some part of the project reads, so a service can tell another's setting from a typo."""

import difflib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from dotenv import dotenv_values

PREFIX = "ETL_"
# The settings of every service (a unit test keeps this equal to their Settings classes): one
# environment and one .env are shared, so a service must stay silent about the others' names.
SETTINGS = frozenset(
    (
        "ETL_API_AUTH",
        "ETL_API_CORS_ORIGINS",
        "ETL_API_DATABASE_URL",
        "ETL_API_HOST",
        "ETL_API_OPERATOR_TOKEN",
        "ETL_API_PORT",
        "ETL_API_REDIS_TIMEOUT_S",
        "ETL_API_SQL_DATABASE_URL",
        "ETL_API_SQL_MAX_BYTES",
        "ETL_API_SQL_MAX_ROWS",
        "ETL_API_SQL_TIMEOUT_MS",
        "ETL_API_TOKEN",
        "ETL_API_WORKERS",
        "ETL_BATCH_PAGES",
        "ETL_BLOCK_MS",
        "ETL_CLAIM_IDLE_MS",
        "ETL_CONSUMER_NAME",
        "ETL_CONTRACT_PATH",
        "ETL_CONTRACT_POLICY",
        "ETL_DATABASE_CONSOLE_ROLE",
        "ETL_DATABASE_READER_ROLE",
        "ETL_DATABASE_URL",
        "ETL_DATA_DIR",
        "ETL_DB_PATH",
        "ETL_DEPARTMENTS_CSV",
        "ETL_DRIFT_NULL_RATE_JUMP",
        "ETL_ENCRYPTION_ENABLED",
        "ETL_ENCRYPTION_RECIPIENTS",
        "ETL_ENCRYPTION_RECIPIENTS_FILE",
        "ETL_FETCH_CONCURRENCY",
        "ETL_HEARTBEAT_STALE_S",
        "ETL_KEY_PREFIX",
        "ETL_LINEAGE_NAMESPACE",
        "ETL_LOCK_TTL_S",
        "ETL_LOG_FORMAT",
        "ETL_LOG_LEVEL",
        "ETL_MAX_DELIVERIES",
        "ETL_OPS_HOST",
        "ETL_OPS_PORT",
        "ETL_PAGE_SIZE",
        "ETL_PII_POLICY",
        "ETL_RAW_BACKLOG_MAX_PAGES",
        "ETL_REDIS_URL",
        "ETL_REQUEST_TIMEOUT_S",
        "ETL_RESUME_DELAY_S",
        "ETL_RETENTION_AFTER_RUN",
        "ETL_RETENTION_DEAD_LETTERS_DAYS",
        "ETL_RETENTION_DEAD_LETTERS_RUNS",
        "ETL_RETENTION_FILES_DAYS",
        "ETL_RETENTION_FILES_RUNS",
        "ETL_RETENTION_HEADERS_DAYS",
        "ETL_RETENTION_HEADERS_RUNS",
        "ETL_RETENTION_REMOTE_DAYS",
        "ETL_RETENTION_REMOTE_RUNS",
        "ETL_RETENTION_ROWS_DAYS",
        "ETL_RETENTION_ROWS_RUNS",
        "ETL_RETENTION_VACUUM_PAGES",
        "ETL_RETRY_AFTER_MAX_S",
        "ETL_RETRY_DELAYS",
        "ETL_RUN_CLAIM_TTL_S",
        "ETL_RUN_MAX_PAGES_FACTOR",
        "ETL_RUN_MAX_RECORDS_FACTOR",
        "ETL_RUN_ON_START",
        "ETL_RUN_STALL_TIMEOUT_S",
        "ETL_RUN_STATE_TTL_S",
        "ETL_SCHEDULE",
        "ETL_SFTP_ATTEMPTS",
        "ETL_SFTP_BACKOFF_S",
        "ETL_SFTP_ENABLED",
        "ETL_SFTP_HOST",
        "ETL_SFTP_KEY",
        "ETL_SFTP_KEY_PASSPHRASE",
        "ETL_SFTP_KEY_PATH",
        "ETL_SFTP_KNOWN_HOSTS",
        "ETL_SFTP_PORT",
        "ETL_SFTP_REMOTE_DIR",
        "ETL_SFTP_TIMEOUT_S",
        "ETL_SFTP_USER",
        "ETL_SOURCE_DEADLINE_S",
        "ETL_SOURCE_MAX_PAGE_BYTES",
        "ETL_SOURCE_URL",
        "ETL_STORAGE_RESERVE_BYTES",
        "ETL_STORAGE_RETRY_MAX_S",
        "ETL_STORAGE_RETRY_S",
        "ETL_UNKNOWN_DEPARTMENT",
        "ETL_UPLOAD_RETRY_MAX_S",
        "ETL_UPLOAD_RETRY_S",
        "ETL_WATCHDOG_INTERVAL_S",
    )
)
# Read outside the Settings classes: the image's service name, the chart's Redis password (expanded
# into ETL_REDIS_URL), the engine tests' switch, the operators' CLI's API address (etlctl).
OTHERS = frozenset(("ETL_SERVICE", "ETL_REDIS_PASSWORD", "ETL_ENGINE_KEEP_IMAGES", "ETL_API_URL"))
KNOWN = SETTINGS | OTHERS


def given(env_file: str | Path | None = ".env") -> set[str]:
    """ETL_* names set in the environment or in ``env_file`` (when it exists), upper-cased."""
    names = {k.upper() for k in os.environ if k.upper().startswith(PREFIX)}
    if env_file is not None and Path(env_file).is_file():
        names |= {k.upper() for k in dotenv_values(env_file) if k.upper().startswith(PREFIX)}
    return names


def suggestion(name: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``name`` (difflib ratio >= 0.8), or None."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.8)
    return close[0] if close else None


def misspelt(names: Iterable[str], own: Iterable[str], known: Iterable[str] = KNOWN) -> dict[str, str]:
    """``{name: suggestion}`` for each of ``names`` unknown to everyone whose closest setting is one of ``own``.

    When the closest is another service's setting, that service is the one to warn.
    """
    mine, everyone = set(own), set(known) | set(own)
    found = {}
    for name in sorted(set(names) - everyone):
        close = suggestion(name, everyone)
        if close in mine:
            found[name] = close
    return found


def warn_misspelt(names: Iterable[str], own: Iterable[str]) -> None:
    """One line on stderr per misspelt name: ``unknown setting X (ignored); did you mean Y?``."""
    for name, close in misspelt(names, own).items():
        print(f"unknown setting {name} (ignored); did you mean {close}?", file=sys.stderr)
