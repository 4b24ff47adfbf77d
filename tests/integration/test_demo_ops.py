"""`make demo` as an operator meets it: `make clean` under a live demo, ONCE=1's links, a source being retried."""

import signal
import subprocess

import httpx
import pytest

import testbed as tb
from tests.integration.test_demo import Demo

pytestmark = pytest.mark.slow


@pytest.fixture
def demo(tmp_path) -> Demo:
    return Demo(tmp_path / "home")


def make_clean(home) -> subprocess.CompletedProcess:
    """`make clean` run in ``home`` (the demo's --home) with the checkout's Makefile."""
    return subprocess.run(
        ["make", "-s", "-C", str(home), "-f", str(tb.ROOT / "Makefile"), "clean"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_make_clean_is_refused_while_a_demo_serves_and_works_once_it_stopped(demo):
    proc = demo.serve()
    try:
        refused = make_clean(demo.home)
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, refused.stderr
        assert "a demo is running" in lines[0] and f"pid {proc.pid}" in lines[0] and "Ctrl-C" in lines[0]
        assert (demo.home / "database" / "data.db").exists() and (demo.home / ".run" / "demo.lock").exists()
        # The demo still serves its data.
        api = f"http://127.0.0.1:{demo.api_port}"
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    done = make_clean(demo.home)
    assert done.returncode == 0, done.stderr
    assert not (demo.home / "database").exists() and not (demo.home / ".run").exists()


def test_once_says_what_stopped_and_its_links_are_dead_as_it_says(demo):
    done = demo.once()
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("stopped (ONCE=1)") and "without ONCE=1" in last, done.stdout
    assert f"http://127.0.0.1:{demo.api_port}/ui/" in done.stdout  # the links it speaks of
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{demo.api_port}/healthz", timeout=2)


def test_an_unreachable_source_shows_as_retrying_with_the_cause_not_as_slow_progress(demo):
    dead = f"http://127.0.0.1:{tb.free_port()}/users"
    failed = demo.once(ETL_SOURCE_URL=dead, ETL_RETRY_DELAYS="4,4")
    assert failed.returncode == 1
    progress = [line for line in failed.stderr.splitlines() if line.startswith("loaded ")]
    assert progress, failed.stderr
    assert all("retrying the source" in line for line in progress), failed.stderr
    assert any("ConnectError" in line and "after a 4.0s wait" in line for line in progress), failed.stderr
    assert not any("left" in line for line in progress), failed.stderr
