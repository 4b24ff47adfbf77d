"""Runs the data-quality report in a child process, so the saver's own memory stays at its loading size.

pandas (which also loads pyarrow) adds ~95 MB to a process and about a second to its start: paid
once a run by a short-lived child (``python -m saver.quality``) instead of for ever by the saver.
The child starts when a run is loaded and works while the saver writes and uploads the run's
files; it only reads the database, and the saver stores what it prints.
"""

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from etl_common import metrics
from etl_common.db import DatabaseUrl

if TYPE_CHECKING:
    from saver.store import Store

log = structlog.get_logger(__name__)

# Far above what a report takes (about 1.5 s at 100,000 users); only a hung child reaches it.
TIMEOUT_S = 900.0
_PACKAGES = str(Path(__file__).resolve().parents[1])  # the directory holding saver/ and etl_common/


class ReportFailed(RuntimeError):
    """The child failed or timed out; the message carries the end of its error output."""


class Job:
    """One report being computed by a child process; ``result()`` once ``done()``."""

    def __init__(self, db_path: "str | DatabaseUrl", run_id: str, timeout_s: float = TIMEOUT_S) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.timeout_s = timeout_s
        # Files, not pipes: a child writing more than a pipe holds would wait for a reader for ever.
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _PACKAGES + (os.pathsep + path if path else "")}
        target = str(db_path)
        if isinstance(db_path, DatabaseUrl):
            target = str(db_path.path) if db_path.engine == "sqlite" else "-"
            if db_path.engine == "postgresql":
                env["ETL_DATABASE_URL"] = db_path.url  # in the environment: a password never shows in ps
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saver.quality", target, run_id],
            stdout=self.out,
            stderr=self.err,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def done(self) -> bool:
        """Whether the child has ended (a child past its time limit is killed, and so has ended)."""
        if self.proc.poll() is not None:
            return True
        if time.monotonic() > self.deadline:
            self.kill()
            return True
        return False

    def result(self) -> dict[str, Any]:
        """The report; raises ReportFailed for a child that failed, was killed or printed no JSON."""
        try:
            code = self.proc.wait()
            if time.monotonic() > self.deadline and code != 0:
                raise ReportFailed(f"the quality report of {self.run_id} took over {self.timeout_s:.0f} s")
            if code != 0:
                self.err.seek(0)
                tail = self.err.read().decode(errors="replace").strip()[-2000:]
                raise ReportFailed(f"the quality report of {self.run_id} failed (exit {code}): {tail}")
            self.out.seek(0)
            body = self.out.read()
            try:
                report: dict[str, Any] = orjson.loads(body)
                return report
            except orjson.JSONDecodeError as exc:
                raise ReportFailed(f"the quality report of {self.run_id} is not JSON: {body[:200]!r}") from exc
        finally:
            self.out.close()
            self.err.close()

    def kill(self) -> None:
        """Kill the child if it is still running, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def compute(db_path: "str | DatabaseUrl", run_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """``saver.quality.compute(db_path, run_id)`` in a child process, waited for; raises ReportFailed."""
    job = Job(db_path, run_id, timeout_s)
    while not job.done():
        time.sleep(0.05)
    return job.result()


class Reports:
    """The runs' reports under way: started when a run is loaded, stored as they end; never hold a run back."""

    def __init__(self, store: "Store", db_path: "str | DatabaseUrl", beat: Callable[[], None]) -> None:
        self.store, self.db_path, self.beat = store, db_path, beat
        self.jobs: dict[str, Job] = {}  # run_id -> its report being computed

    def start(self, run_id: str) -> None:
        """Start computing the run's data-quality report in a child process, unless it exists or is under way."""
        if run_id in self.jobs or self.store.has_quality(run_id):
            return
        try:
            self.jobs[run_id] = Job(self.db_path, run_id)
        except OSError as exc:
            metrics.ERRORS.labels(stage="quality").inc()
            log.error("quality report not started; the run goes on without one", run_id=run_id, error=str(exc))

    def collect(self) -> None:
        """Store the reports whose child has ended."""
        for run_id, job in list(self.jobs.items()):
            if job.done():
                self._store(run_id)

    def wait(self, run_id: str) -> None:
        """Wait for the run's report before the run is marked succeeded, so a succeeded run has one.

        The child started when the run was loaded and ran beside its files and upload; what is left
        is usually its start-up (importing pandas, about a second).
        """
        job = self.jobs.get(run_id)
        if job is None:
            return
        while not job.done():
            self.beat()
            time.sleep(0.02)
        self._store(run_id)

    def kill_all(self) -> None:
        """Stop every child (they only read; the next start computes the report again)."""
        for job in self.jobs.values():
            job.kill()

    def _store(self, run_id: str) -> None:
        """Store the ended child's report; a failed one is logged and never holds the run back."""
        job = self.jobs.pop(run_id)
        seconds = time.monotonic() - job.started
        try:
            result = job.result()
            rate = float(result["invalid_rate"])
            self.store.save_quality(run_id, result)
        except (ReportFailed, sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            metrics.ERRORS.labels(stage="quality").inc()
            log.error("quality report failed; the run goes on without one", run_id=run_id, error=str(exc))
            return
        metrics.STAGE_DURATION.labels(stage="quality").observe(seconds)
        metrics.LAST_RUN_INVALID_RATIO.set(rate)
        log.info(
            "quality report stored",
            run_id=run_id,
            records=result["records"],
            invalid=result["invalid"],
            invalid_rate=rate,
            rules=result["rules"],
            duration_ms=round(seconds * 1000, 1),
        )
