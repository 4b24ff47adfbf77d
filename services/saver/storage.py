"""A full database or data volume: recognised, shown (readiness, metric, runs' error) and waited out with backoff."""

import errno
import sqlite3
import time
from pathlib import Path

import structlog

from etl_common import metrics
from etl_common.ops import Heartbeat
from etl_common.retry import Backoff

log = structlog.get_logger(__name__)

# The runs' error while the volume is full starts with this, so that it is cleared (and only it) once space is back.
ERROR_PREFIX = "save: no space left"


def is_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or an OSError ENOSPC/EDQUOT from writing a file."""
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == 13 or "database or disk is full" in str(exc)  # SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class StorageFull:
    """The saver's wait for space: set by ``hit``, retried when ``due``, ended by ``cleared``."""

    def __init__(self, db_path: str, data_dir: str, retry_s: float, retry_max_s: float, heartbeat: Heartbeat) -> None:
        self.db_path, self.data_dir = db_path, data_dir
        self.heartbeat = heartbeat
        self.backoff = Backoff(retry_s, retry_max_s)
        self.failures = 0
        self.due_at = 0.0
        self.reason: str | None = None

    @property
    def full(self) -> bool:
        """True while the saver waits for space."""
        return self.reason is not None

    def seconds_to_retry(self) -> float:
        """Seconds until the next try (0 when due)."""
        return max(0.0, self.due_at - time.monotonic())

    def hit(self, exc: BaseException) -> str:
        """Record a failed write for want of space; returns the reason the runs and /readyz show."""
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        self.due_at = time.monotonic() + delay
        # SQLite's error names no file: it is the database's; a file write is the run files' (ETL_DATA_DIR).
        # On PostgreSQL (no db_path) the database's volume is the server's: named as such, not as a local folder.
        volume: Path | str
        if isinstance(exc, sqlite3.Error):
            volume = Path(self.db_path).resolve().parent if self.db_path else "the PostgreSQL server's data"
        else:
            volume = Path(getattr(exc, "filename", None) or Path(self.data_dir) / "x").resolve().parent
        self.reason = (
            f"{ERROR_PREFIX} on the volume of {volume} ({type(exc).__name__}: {exc}); nothing is lost (pages not "
            f"committed stay in Redis). Free space on that volume (or grow it): the saver tries again every "
            f"{delay:g} s (ETL_STORAGE_RETRY_S, ETL_STORAGE_RETRY_MAX_S) and the run resumes by itself"
        )
        self.heartbeat.problem = self.reason
        metrics.SAVER_STORAGE_FULL.set(1)
        log.error("storage full; waiting for space", path=str(volume), error=str(exc), retry_in_s=delay)
        return self.reason

    def cleared(self) -> None:
        """A write went through again: the wait is over."""
        if self.reason is not None:
            log.info("storage has room again; resuming", failures=self.failures)
        self.failures, self.due_at, self.reason = 0, 0.0, None
        self.heartbeat.problem = None
        metrics.SAVER_STORAGE_FULL.set(0)
