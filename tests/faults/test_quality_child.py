"""The quality report's child, which follows a run as it loads, killed in a real pipeline: the run still ends well."""

import os
import signal
from pathlib import Path

import orjson

from tests.faults.conftest import assert_exact, wait_for


def _following_children(saver_pid: int) -> list[int]:
    """The saver's children running ``python -m saver.quality ... --follow ...``."""
    try:
        children = Path(f"/proc/{saver_pid}/task/{saver_pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for pid in map(int, children):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"saver.quality" in argv and b"--follow" in argv:
            found.append(pid)
    return found


def test_the_following_child_killed_while_the_run_loads_costs_nothing(slow_source, make_pipeline):
    """SIGKILL of the child mid-run: another follows, or one reads the run at the end; the run has its report."""
    src = slow_source(count=600, delay_s=0.3)
    p = make_pipeline(src, ETL_PAGE_SIZE="50")
    p.start_workers()
    extractor = p.start("extractor", "once")
    saver_pid = p.procs["saver"].popen.pid
    killed = wait_for(lambda: _following_children(saver_pid), what="the report's child following the run")
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert extractor.popen.wait(60) == 0
    run = p.wait_run(("succeeded", "failed", "upload_pending"), timeout_s=90)
    assert run["status"] == "succeeded", p.logs()
    assert_exact(p, run, list(range(1, 601)), page_size=50)
    with p.db() as db:
        row = db.execute("SELECT report FROM run_quality WHERE run_id=?", (run["run_id"],)).fetchone()
    assert row is not None, p.logs()
    report = orjson.loads(row[0])
    assert (report["records"], report["valid"], report["invalid"]) == (600, 600, 0)
    # No child is left behind once the run is done (the one that reported has ended, none follows any more).
    wait_for(lambda: not _following_children(saver_pid), what="no child following a finished run")
