"""scripts/bootstrap.sh: `make demo` installs the runtime only, `make test` adds the test tools and the browser.

The script runs for real on a copy of the checkout's files, on a machine without Chromium, Prometheus or
age (a PATH without them). apt-get on that PATH records what it was asked to install and installs nothing:
the test must not install packages on the machine that runs it. The .venv's stamps are fresh, so pip has
nothing to do (tests/integration/test_demo_ops.py and a fresh clone cover the real installs).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import testbed as tb

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"  # the system's tools, not a version manager's shims
TOOLS = ("bash", "python3", "redis-server", "ssh-keygen", "id", "dirname", "touch", "cat", "make", "sh", "flock")


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The files bootstrap.sh reads, a .venv whose stamps are up to date, and a PATH without the optional tools."""
    home = tmp_path / "checkout"
    (home / "scripts").mkdir(parents=True)
    shutil.copy(tb.ROOT / "scripts" / "bootstrap.sh", home / "scripts")
    for name in ("pyproject.toml", "requirements.lock", "Makefile"):
        shutil.copy(tb.ROOT / name, home)
    (home / ".venv" / "bin").mkdir(parents=True)
    (home / ".venv" / "bin" / "python").symlink_to(tb.PYTHON)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool, path=SYSTEM_PATH)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    # Records its arguments and installs nothing.
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "apt.calls"}\nexit 0\n')
    apt.chmod(0o755)
    (bin_dir / "systemctl").symlink_to(shutil.which("true", path=SYSTEM_PATH))
    return home


def stamp(home: Path, *names: str) -> None:
    for name in names:
        (home / ".venv" / name).touch()


def bootstrap(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": str(home.parent / "bin"), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        ["bash", str(home / "scripts" / "bootstrap.sh"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def apt_calls(home: Path) -> str:
    calls = home.parent / "apt.calls"
    return calls.read_text() if calls.exists() else ""


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path of bootstrap.sh runs as root only")
def test_the_demo_installs_no_browser_and_no_test_tool(checkout):
    stamp(checkout, ".installed")
    done = bootstrap(checkout)
    assert done.returncode == 0, done.stderr
    assert apt_calls(checkout) == ""
    assert "chromium" not in done.stdout + done.stderr
    assert "test tools" not in done.stdout
    assert not (checkout / ".venv" / ".installed-dev").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path of bootstrap.sh runs as root only")
def test_the_tests_add_the_browser_and_say_so_first(checkout):
    stamp(checkout, ".installed", ".installed-dev")
    done = bootstrap(checkout, "--test")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if line.startswith("installing for the tests:")]
    assert said and {"chromium", "chromium-driver", "prometheus", "age"} <= set(said[0].split(":")[1].split())
    assert "chromium chromium-driver" in apt_calls(checkout)


def test_a_stale_runtime_says_what_it_installs_before_it_starts(checkout):
    """A lock newer than the stamp: the runtime line comes first (pip then fails here: no pip in this .venv)."""
    stamp(checkout, ".installed")
    os.utime(checkout / ".venv" / ".installed", (0, 0))
    done = bootstrap(checkout)
    first = done.stdout.splitlines()[0]
    assert first.startswith("installing into .venv: the runtime") and "no test tools" in first
    assert "dev" not in first


def test_a_bad_option_is_one_line_and_exit_code_2(checkout):
    done = bootstrap(checkout, "--tests")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0


def test_without_python_3_11_it_says_so_in_one_line(checkout):
    (checkout.parent / "bin" / "python3").unlink()
    done = bootstrap(checkout)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Python 3.11 or newer is needed (found: no python3); install python3.11 (or newer) and run again"
    )
