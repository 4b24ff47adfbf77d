"""The demo watches the database the services write, and names how a part that died mid-run ended."""

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import wait_for
from tests.integration.test_demo import Demo, children, one_line

pytestmark = pytest.mark.slow


def _loaded_pages(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM loaded_pages").fetchone()[0])
        except sqlite3.Error:
            return 0


def _service_pid(parent: int, name: str) -> int | None:
    for pid in children(parent):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", name.encode()]:
                return pid
    return None


def test_the_demo_follows_a_sqlite_database_url(tmp_path):
    demo = Demo(tmp_path / "home")
    other = tmp_path / "other.db"
    done = demo.once("--users", "150", ETL_DATABASE_URL=f"sqlite:///{other}")
    assert done.returncode == 0, done.stderr
    assert re.search(r"run \S+ succeeded", done.stdout), done.stdout
    assert f"database: {other}" in done.stdout
    with contextlib.closing(sqlite3.connect(other)) as conn:
        assert conn.execute("SELECT status, raw_count FROM etl_runs").fetchall() == [("succeeded", 150)]
    assert not (demo.home / "database" / "data.db").exists()


def test_a_service_killed_mid_run_is_named_by_its_signal_and_the_run_resumes(tmp_path):
    demo = Demo(tmp_path / "home")
    args = ("--users", "6000", "--bad-every", "0")
    with (demo.home / "demo.out").open("w") as out:
        proc = subprocess.Popen(demo.argv("--once", *args), env=demo.env(), stdout=out, stderr=subprocess.PIPE)
    try:
        db = demo.home / "database" / "data.db"
        wait_for(lambda: _loaded_pages(db) > 0 or proc.poll() is not None, timeout_s=120, what="a page loaded")
        saver = _service_pid(proc.pid, "saver")
        assert saver is not None and proc.poll() is None, demo.output()
        os.kill(saver, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    line = one_line(err.decode())
    assert "saver was killed by SIGKILL during the run" in line and "`make demo` resumes the run" in line, line
    again = demo.once(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming run" in again.stdout and re.search(r"run \S+ succeeded", again.stdout), again.stdout
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT status, raw_count FROM etl_runs").fetchall() == [("succeeded", 6000)]
