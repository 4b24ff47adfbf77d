"""Runs the data-quality report in a child process, so the saver's own memory stays at its loading size.

pandas (which also loads pyarrow) adds ~95 MB to a process and about a second to its start: paid
once a run by a short-lived child (``python -m saver.quality``) instead of for ever by the saver.
The child starts when a run is loaded and works while the saver writes and uploads the run's
files; it only reads the database, and the saver stores what it prints.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

# Far above what a report takes (about 1.5 s at 100,000 users); only a hung child reaches it.
TIMEOUT_S = 900.0
_PACKAGES = str(Path(__file__).resolve().parents[1])  # the directory holding saver/ and etl_common/


class ReportFailed(RuntimeError):
    """The child failed or timed out; the message carries the end of its error output."""


class Job:
    """One report being computed by a child process; ``result()`` once ``done()``."""

    def __init__(self, db_path: str, run_id: str, timeout_s: float = TIMEOUT_S) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.timeout_s = timeout_s
        # Files, not pipes: a child writing more than a pipe holds would wait for a reader for ever.
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _PACKAGES + (os.pathsep + path if path else "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saver.quality", str(db_path), run_id],
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


def compute(db_path: str, run_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """``saver.quality.compute(db_path, run_id)`` in a child process, waited for; raises ReportFailed."""
    job = Job(db_path, run_id, timeout_s)
    while not job.done():
        time.sleep(0.05)
    return job.result()
