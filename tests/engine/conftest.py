"""The private Docker engine of the engine tests: started once, images built once, all of it removed at the end.

ETL_ENGINE_KEEP_IMAGES=1 keeps the daemon's data root (stand-ins and images) for a faster next run;
containers, networks and volumes are removed either way, and the daemon is always stopped.
"""

import atexit
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from testbed import chart
from testbed import engine as eng
from tests.compose.composefile import COMPOSE, ROOT, SERVICES, dockerfile, parse_dotenv

# `make engine-test` prints this file: one line per scenario (run id, counts, time taken), then the total.
SUMMARY = chart.ROOT / ".run" / "engine" / "summary.txt"


# The short form of each scenario (run id and counts), joined into the summary's last line.
_SHORT: list[str] = []


def record(line: str, short: str) -> None:
    """Add one scenario's line to the summary, and its short form to the last line."""
    _SHORT.append(short)
    with SUMMARY.open("a") as f:
        f.write(line.rstrip("\n") + "\n")


def write_dotenv(proj: Path, changes: dict[str, str]) -> dict[str, str]:
    """.env.example with ``changes`` applied to its uncommented keys, written as proj/.env; returns the values."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={changes[key]}" if key in changes and not line.startswith("#") else line)
    (proj / ".env").write_text("\n".join(lines) + "\n")
    return parse_dotenv((proj / ".env").read_text())


def compose_runner(e: eng.Engine, proj: Path, project: str, *extra: str) -> Callable[..., subprocess.CompletedProcess]:
    """dc(*args, check=True, timeout=300): docker-compose on this engine for the project in proj, with the compose
    file, proj/.env and ``extra`` options (further -f files, --profile); a failure shows compose's output."""
    compose = [
        str(Path(sys.executable).with_name("docker-compose")),
        "--project-name", project,
        "--project-directory", str(proj),
        "--env-file", str(proj / ".env"),
        "-f", str(COMPOSE),
        *extra,
    ]  # fmt: skip

    def dc(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        out = subprocess.run([*compose, *args], env=e.env, cwd=proj, capture_output=True, text=True, timeout=timeout)
        assert not check or out.returncode == 0, f"compose {' '.join(args)}:\n{out.stdout[-3000:]}{out.stderr[-4000:]}"
        return out

    return dc


@contextmanager
def compose_project(
    e: eng.Engine, proj: Path, project: str, *extra: str, log_chars: int = 12000
) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """A compose project for one test: yields its ``dc`` (see compose_runner); on a failure prints the services'
    last logs; always ends with `down -v`; and, when the body passed, asserts nothing of the project is left."""
    dc = compose_runner(e, proj, project, *extra)
    try:
        yield dc
    except BaseException:
        print(dc("logs", "--no-color", "--tail", "60", check=False).stdout[-log_chars:])
        raise
    finally:
        dc("down", "-v", "--remove-orphans", "--timeout", "30", check=False, timeout=300)
    assert_nothing_left(e, project)


def assert_nothing_left(e: eng.Engine, project: str) -> None:
    """After `down -v`: no container, no volume and no network of the compose project on the engine."""
    left = {
        what: e.docker(*cmd).stdout.split()
        for what, cmd in {
            "containers": ("ps", "-aq"),
            "volumes": ("volume", "ls", "-q"),
            "networks": ("network", "ls", "-q", "--filter", f"name={project}"),
        }.items()
    }
    assert not any(left.values()), left


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def standin_tags() -> dict[str, list[str]]:
    """Stand-in kind -> every image name the Dockerfile, the compose file and the chart (defaults) use for it."""
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    redis = {compose["redis"]["image"], f"{values['redis']['image']['repository']}:{values['redis']['image']['tag']}"}
    sftp = {compose["sftp"]["image"], f"{values['sftp']['image']['repository']}:{values['sftp']['image']['tag']}"}
    python = {base.split()[0] for base in dockerfile("api").stages() if base.startswith("python:")}
    return {
        "python": sorted(python),
        "redis": sorted(redis),
        "sftp": sorted(sftp),
        "postgres": [compose["postgres"]["image"]],
    }


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """A started private engine with the stand-ins and the four project images (etl-<service>:<tag>)."""
    why = eng.usable()
    if why and os.environ.get("ETL_ENGINE_REQUIRED") == "1":
        pytest.fail(f"make engine-test cannot run here: {why}")  # asked for by name: never a silent skip
    if why:
        pytest.skip(why)  # make test as a non-root user; scripts/bootstrap.sh --test says so before the run
    started = time.monotonic()
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.unlink(missing_ok=True)
    eng.install_packages()
    e = eng.Engine(keep_images=os.environ.get("ETL_ENGINE_KEEP_IMAGES") == "1")
    atexit.register(e.close)  # also when the session is interrupted
    # SIGTERM (a CI timeout, kill) unwinds through the finally below instead of ending the process on the spot.
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        e.start()
        work = tmp_path_factory.mktemp("engine")
        e.build_base(work)
        tags = standin_tags()
        e.build_standins(work, {kind: names[0] for kind, names in tags.items()})
        for names in tags.values():
            for name in names[1:]:
                e.docker("tag", names[0], name)
        compose = yaml.safe_load(COMPOSE.read_text())["services"]
        for name in SERVICES:
            # The compose file's own build section: the one Dockerfile, SERVICE as the build argument.
            assert compose[name]["build"]["args"] == {"SERVICE": name}
            e.build_service(name, compose[name]["image"])
        e.python_image = tags["python"][0]
        e.started = started
        yield e
    finally:
        signal.signal(signal.SIGTERM, previous)
        e.close()
    left = [p for p in (e.sock, e.exec_root, e.pidfile) if p.exists()]
    assert not left, f"the engine left {left}"
    kept = "images kept" if e.keep_images else "images removed"
    with SUMMARY.open("a") as f:
        f.write(
            f"engine-test: {'; '.join(_SHORT) or 'no scenario ran'}; {time.monotonic() - started:.0f}s in all, "
            f"daemon stopped, no container, network or volume left, {kept}\n"
        )


def pytest_collection_modifyitems(config, items):
    """The engine tests last, so the daemon (a session fixture) stops as soon as they are done."""
    items.sort(key=lambda item: "tests/engine/" in item.nodeid.replace("\\", "/"))
