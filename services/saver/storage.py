"""A full database or data volume: recognised, shown (readiness, metric, runs' error) and waited out with backoff."""

import errno
import os
import sqlite3
import time
from collections.abc import Callable
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


class Reserve:
    """A file of ``size`` bytes beside the SQLite database, given back to the volume when it is full so that the
    runs' error still fits: a batch rolled back for want of space may have left no room for one WAL frame."""

    def __init__(self, db_path: str, size: int) -> None:
        self.path = Path(f"{db_path}-reserve") if db_path and size > 0 else None
        self.size = size

    def hold(self) -> int:
        """Claim up to ``size`` bytes (as many as the volume has free); returns the bytes now held."""
        if self.path is None:
            return 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                held = os.fstat(fd).st_size
                st = os.statvfs(self.path.parent)
                want = min(self.size, held + st.f_bavail * st.f_frsize)
                if want > held:
                    os.posix_fallocate(fd, 0, want)  # blocks really allocated: a sparse file would hold nothing
                    held = want
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("the storage reserve cannot be held", path=str(self.path), error=str(exc))
            return 0
        if held < self.size:
            log.warning("the storage reserve is short: the volume is full", path=str(self.path), held=held)
        return held

    def release(self) -> bool:
        """Give the reserve's space back to the volume; True when it held some."""
        if self.path is None:
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class StorageFull:
    """The saver's wait for space: set by ``hit``, retried when ``due``, ended by ``cleared``."""

    def __init__(
        self, db_path: str, data_dir: str, retry_s: float, retry_max_s: float, heartbeat: Heartbeat, reserve: int = 0
    ) -> None:
        self.db_path, self.data_dir = db_path, data_dir
        self.heartbeat = heartbeat
        self.reserve = Reserve(db_path, reserve)
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

    def show(self, write: Callable[[str], None]) -> None:
        """Write the reason where the runs show it; when even that does not fit, give the reserve back and try once
        more. Failing both, /readyz, the log and etl_saver_storage_full still say it."""
        assert self.reason is not None
        try:
            write(self.reason[:2000])
            return
        except sqlite3.Error:
            if not self.reserve.release():
                return
        log.warning("storage reserve given back to show the runs' error", path=str(self.reserve.path))
        try:
            write(self.reason[:2000])
        except sqlite3.Error:
            pass
        finally:
            self.reserve.hold()  # what the error did not take: the held pages must not load into it

    def cleared(self) -> None:
        """A write went through again: the wait is over (and the reserve is held again when it was given back)."""
        if self.reason is not None:
            log.info("storage has room again; resuming", failures=self.failures)
            self.reserve.hold()  # topped up to its size, room allowing
        self.failures, self.due_at, self.reason = 0, 0.0, None
        self.heartbeat.problem = None
        metrics.SAVER_STORAGE_FULL.set(0)
