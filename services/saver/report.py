"""Runs the data-quality report in a child process, so the saver's own memory stays at its loading size.

pandas (which also loads pyarrow) adds ~95 MB to a process: paid once a day by a short-lived child
(``python -m saver.quality``) instead of for ever by the saver. The child only reads the database.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

# Far above what a report takes (about 1.5 s at 100,000 users); only a hung child reaches it.
TIMEOUT_S = 900.0
_PACKAGES = str(Path(__file__).resolve().parents[1])  # the directory holding saver/ and etl_common/


class ReportFailed(RuntimeError):
    """The child failed or timed out; the message carries the end of its error output."""


def compute(db_path: str, run_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """``saver.quality.compute(db_path, run_id)``, computed in a child process; raises ReportFailed."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": _PACKAGES + (os.pathsep + path if path else "")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "saver.quality", str(db_path), run_id],
            capture_output=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ReportFailed(f"the quality report of {run_id} took over {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-2000:]
        raise ReportFailed(f"the quality report of {run_id} failed (exit {done.returncode}): {tail}")
    try:
        return orjson.loads(done.stdout)
    except orjson.JSONDecodeError as exc:
        raise ReportFailed(f"the quality report of {run_id} is not JSON: {done.stdout[:200]!r}") from exc
