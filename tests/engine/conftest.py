"""The private Docker engine of the engine tests: started once, images built once, all of it removed at the end.

ETL_ENGINE_KEEP_IMAGES=1 keeps the daemon's data root (stand-ins and images) for a faster next run;
containers, networks and volumes are removed either way, and the daemon is always stopped.
"""

import atexit
import os
import signal
import time

import pytest
import yaml

from testbed import chart
from testbed import engine as eng
from tests.compose.composefile import COMPOSE, SERVICES, dockerfile

# `make engine-test` prints this file: one line per scenario (run id, counts, time taken), then the total.
SUMMARY = chart.ROOT / ".run" / "engine" / "summary.txt"


# The short form of each scenario (run id and counts), joined into the summary's last line.
_SHORT: list[str] = []


def record(line: str, short: str) -> None:
    """Add one scenario's line to the summary, and its short form to the last line."""
    _SHORT.append(short)
    with SUMMARY.open("a") as f:
        f.write(line.rstrip("\n") + "\n")


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
