"""Runs the data-quality report in a child process, so the saver's own memory stays at its loading size.

pandas (which also loads pyarrow) adds ~95 MB to a process and about a second to its start: paid
once a run by a child (``python -m saver.quality``) instead of for ever by the saver. The child
starts with a run's first pages and reads its rows as they commit (``Reports.prepare``), so little
is left to read after the last page; it only reads the database, and the saver stores what it prints.
A child that dies or hangs costs the run its report, never its end (``Reports.wait``'s time limit).
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
# A warm child that ended while waiting is replaced at most this often (one that cannot start is not retried per page).
RESPAWN_S = 5.0
# The followed run is given up for another run loading when none of its pages came for this long.
SWITCH_S = 5.0
# A warm child with no page loaded for this long is stopped (its run failed, stalled, or is another saver's to
# finish): its memory is not held for a day; the next page loaded starts one again.
IDLE_S = 60.0
_PACKAGES = str(Path(__file__).resolve().parents[1])  # the directory holding saver/ and etl_common/


class ReportFailed(RuntimeError):
    """The child failed or timed out; the message carries the end of its error output."""


class Job:
    """One report computed by a child process; ``result()`` once ``done()``.

    A child started with ``follow`` is warm: it imports pandas and reads the run's rows as its pages commit
    (``python -m saver.quality DB --follow RUN_ID``), until ``go`` (a line on its standard input) names the run to
    report; its time limit counts from then.
    """

    def __init__(
        self, db_path: "str | DatabaseUrl", run_id: str, timeout_s: float = TIMEOUT_S, follow: bool = False
    ) -> None:
        self.run_id, self.follow = run_id, follow
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s if not follow else float("inf")
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
        # A warm child reads its run from a pipe; it ends at the pipe's end of file, so it never outlives the saver.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saver.quality", target, *(["--follow"] if follow else []), run_id],
            stdout=self.out,
            stderr=self.err,
            stdin=subprocess.PIPE if follow else subprocess.DEVNULL,
            bufsize=0,
            env=env,
        )

    def go(self, run_id: str) -> bool:
        """Have the warm child report ``run_id`` (its own run: the rows left; another: read whole); False when it has
        already ended (it is then reaped and its files closed)."""
        if self.proc.stdin is None or self.proc.poll() is not None:
            self.discard()
            return False
        try:
            # One short line: within the pipe's buffer, so the write never waits on the child.
            self.proc.stdin.write(run_id.encode() + b"\n")
            self.proc.stdin.close()
        except OSError:  # it ended between the poll and the write
            self.discard()
            return False
        self.run_id, self.follow = run_id, False
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout_s
        return True

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

    def discard(self) -> None:
        """Kill and reap the child and close its files: for a child whose result nobody will read."""
        self.kill()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.out.close()
        self.err.close()


def compute(db_path: "str | DatabaseUrl", run_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """``saver.quality.compute(db_path, run_id)`` in a child process, waited for; raises ReportFailed."""
    job = Job(db_path, run_id, timeout_s)
    while not job.done():
        time.sleep(0.05)
    return job.result()


class Reports:
    """The runs' reports under way: started when a run is loaded, stored as they end; never hold a run back.

    While a run loads, one warm child follows it (``prepare``): pandas is imported and the rows are read as the
    pages commit, so what is left after the last page is the last second's rows and the checks.
    """

    def __init__(self, store: "Store", db_path: "str | DatabaseUrl", beat: Callable[[], None]) -> None:
        self.store, self.db_path, self.beat = store, db_path, beat
        self.jobs: dict[str, Job] = {}  # run_id -> its report being computed
        self.spare: Job | None = None  # a warm child following a run being loaded
        self.spare_started = -RESPAWN_S
        self.wanted = 0.0  # monotonic time of the last page loaded of the followed run

    def prepare(self, run_id: str) -> None:
        """Have a warm child following ``run_id`` (started now when there is none or it ended): called as pages load.

        One follows at a time: while another run loads too, the first keeps it (the other's report reads it whole)
        until no page of it came for ``SWITCH_S`` (it failed or stalled).
        """
        now = time.monotonic()
        spare = self.spare
        if run_id in self.jobs:
            return
        if spare is not None and spare.proc.poll() is None:
            if spare.run_id == run_id:
                self.wanted = now
                return
            if now - self.wanted < SWITCH_S:
                return
            spare.discard()
            self.spare = None
        elif now - self.spare_started < RESPAWN_S:
            return
        elif spare is not None:
            log.warning("the following quality-report child ended; another is started", code=spare.proc.returncode)
            spare.discard()
        self.wanted = self.spare_started = now
        try:
            self.spare = Job(self.db_path, run_id, follow=True)
        except OSError as exc:
            self.spare = None
            log.error("quality-report child not started ahead; the report will start one", error=str(exc))

    def drop_spare(self) -> None:
        """Stop the waiting child: no run loading needs it, its memory is given back."""
        if self.spare is not None:
            self.spare.discard()
            self.spare = None

    def start(self, run_id: str) -> None:
        """Start computing the run's data-quality report in a child process, unless it exists or is under way.

        The warm child takes it when there is one alive; otherwise (none, or it died while waiting) a new child does.
        """
        if run_id in self.jobs or self.store.has_quality(run_id):
            return
        spare, self.spare = self.spare, None
        if spare is not None:
            if spare.go(run_id):
                self.jobs[run_id] = spare
                return
            log.warning("the quality-report child following the run had ended; a new one reads it", run_id=run_id)
        try:
            self.jobs[run_id] = Job(self.db_path, run_id)
        except OSError as exc:
            metrics.ERRORS.labels(stage="quality").inc()
            log.error("quality report not started; the run goes on without one", run_id=run_id, error=str(exc))

    def collect(self) -> None:
        """Store the reports whose child has ended; stop a warm child whose run had no page loaded for ``IDLE_S``."""
        if self.spare is not None and time.monotonic() - self.wanted > IDLE_S:
            self.drop_spare()
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
            job.discard()
        self.jobs.clear()
        self.drop_spare()

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
