"""The four built images: each holds its own service only, and its default command starts that service."""

import time

import pytest

from tests.compose.composefile import SERVICES

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]


@pytest.mark.parametrize("name", SERVICES)
def test_image_holds_its_service_and_starts_it_by_default(engine, name):
    image = f"etl-{name}:1.0.0"
    listing = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "ls", image, "/app").stdout.split()
    assert sorted(listing) == sorted(["etl_common", "etlctl", name])  # etlctl: the operators' CLI, in every image
    assert engine.docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip() == "10001:10001"
    # The image's own CMD (no command given): the build argument's service becomes PID 1, read-only root.
    box = engine.docker("run", "-d", "--network", "none", "--read-only", "--tmpfs", "/tmp", image).stdout.strip()
    try:
        cmdline = ""
        for _ in range(50):
            out = engine.docker("exec", box, "cat", "/proc/1/cmdline", check=False)
            cmdline = out.stdout.replace("\0", " ").strip()
            if out.returncode == 0 and cmdline.startswith("python"):
                break
            time.sleep(0.2)
        assert cmdline == f"python -m {name}"
    finally:
        engine.docker("rm", "-f", box, check=False)
