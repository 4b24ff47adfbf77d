"""The service images: one hadolint-clean Dockerfile, its shape per service, the build context, wheels for Alpine."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compose.composefile import DOCKERFILE, ROOT, SERVICES, dockerfile
from tests.compose.dockerignore import DockerIgnore
from tests.support import project

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
ARCHES = ("x86_64", "aarch64")


def runtime_dependencies() -> list[str]:
    """The runtime requirements declared in pyproject.toml (what the Dockerfile installs)."""
    return project()["dependencies"]


def python_version() -> str:
    """The Python of the images, from the base image tag (python:3.12.12-alpine3.22 -> 3.12)."""
    versions = set()
    for name in SERVICES:
        for base in dockerfile(name).stages():
            m = re.match(r"python:(\d+\.\d+)\.\d+-alpine[\d.]+(?:@sha256:[0-9a-f]{64})?(?:\s|$)", base)
            assert m, f"{name}: base image {base!r} is not a pinned python:X.Y.Z-alpineA.B tag"
            versions.add(m.group(1))
    assert len(versions) == 1, f"the images disagree on the Python version: {versions}"
    return versions.pop()


def test_dockerfile_passes_hadolint():
    out = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_is_multistage_non_root_and_healthchecked(name):
    df = dockerfile(name)
    assert len(df.stages()) >= 2, "the compilers-free final stage needs a separate build stage"
    final = dict(df.final())
    user = final.get("USER", "")
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), f"final USER must be a non-root numeric uid, got {user!r}"
    assert final.get("STOPSIGNAL") == "SIGTERM"
    # The service named by the build argument, through the image's environment.
    assert f"ETL_SERVICE={name}" in dict(df.final())["ENV"].split()
    assert df.exec_form("CMD") == ["/bin/sh", "-c", 'exec python -m "$ETL_SERVICE"']
    check = df.exec_form("HEALTHCHECK")
    assert check[:2] == ["python", "-c"], "no curl in the image: the health check uses Python"
    compile(check[2], "<healthcheck>", "exec")
    # Only pinned wheels: a missing musllinux wheel must fail the build, never pull a compiler.
    assert "--only-binary=:all:" in df.text and "-c /tmp/requirements.lock" in df.text
    assert "apk add" not in df.text, "the images install no system packages (and so no compiler)"
    copies = [arg for w, arg in df.instructions if w == "COPY" and "--from" not in arg]
    assert "services/etl_common /app/etl_common" in copies and f"services/{name} /app/{name}" in copies


def test_one_dockerfile_builds_every_service():
    """One recipe: the build argument SERVICE is the only difference between the four images."""
    df = dockerfile("api")
    assert not list(ROOT.glob("services/*/Dockerfile")), "the services share the root Dockerfile"
    assert [a for w, a in df.instructions if w == "ARG"] == ["SERVICE", "SERVICE"]  # one per stage
    assert "${SERVICE}" in DOCKERFILE.read_text()


def test_dockerignore_keeps_secrets_data_and_caches_out():
    ignore = DockerIgnore.load(ROOT / ".dockerignore")
    kept_out = [
        ".env",
        "ssh_keys/id_ed25519",
        "ssh_keys/known_hosts",
        "database/data.db",
        "data/raw_users/x.jsonl",
        "sftp_data/upload/x.jsonl",
        ".run/demo/redis.log",
        ".venv/bin/python",
        ".git/HEAD",
        "services/etl_common/__pycache__/settings.cpython-312.pyc",
        "Dockerfile",
        "x.db",
    ]
    needed = [
        "pyproject.toml",
        "requirements.lock",
        "services/etl_common/settings.py",
        "services/extractor/__main__.py",
        "services/saver/migrations/0001_init.sql",
        "services/transformer/departments.csv",
        "services/api/routes/runs.py",
    ]
    assert [p for p in kept_out if not ignore.excluded(p)] == []
    assert [p for p in needed if ignore.excluded(p)] == []


def test_every_copied_path_is_in_the_build_context():
    ignore = DockerIgnore.load(ROOT / ".dockerignore")
    for name in SERVICES:
        for w, arg in dockerfile(name).instructions:
            if w == "COPY" and "--from" not in arg:
                src = arg.split()[0]
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
                assert not ignore.excluded(src), f"{name}: COPY {src} is excluded by .dockerignore"


@pytest.mark.pypi
@pytest.mark.parametrize("arch", ARCHES)
def test_every_requirement_has_a_musllinux_wheel(arch, tmp_path):
    """pip resolves the runtime dependencies at the lock's versions for Alpine from wheels only (needs PyPI).

    The image's musl is 1.2, so its pip also takes musllinux_1_1 wheels (pydantic-core ships those);
    pip download does not widen --platform by itself, hence the explicit list.
    """
    version = python_version()
    platforms = [arg for tag in ("1_2", "1_1") for arg in ("--platform", f"musllinux_{tag}_{arch}")]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *platforms,
        "--python-version",
        version,
        "--implementation",
        "cp",
        "-d",
        str(tmp_path),
        "-c",
        str(ROOT / "requirements.lock"),
        *runtime_dependencies(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    errors = "\n".join(line for line in out.stderr.splitlines() if "ERROR" in line)
    assert out.returncode == 0, f"no musllinux_1_2_{arch} wheel for Python {version}:\n{errors or out.stderr[-2000:]}"
    wheels = sorted(p.name for p in tmp_path.iterdir())
    assert wheels and all(w.endswith(".whl") for w in wheels)
    native = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert all(f"musllinux_1_2_{arch}" in w or f"musllinux_1_1_{arch}" in w for w in native), native


_IMPORT_ALL = """
import importlib, pkgutil, sys
name, app = sys.argv[1], sys.argv[2]
pkg = importlib.import_module(name)
importlib.import_module(name + ".__main__")
for info in pkgutil.walk_packages(pkg.__path__, name + "."):
    importlib.import_module(info.name)
ours = ("etl_common", "extractor", "transformer", "saver", "api", "dummyjson")
loaded = {n: getattr(m, "__file__", None) or "" for n, m in sys.modules.items() if n.split(".")[0] in ours}
outside = sorted(n for n, f in loaded.items() if not f.startswith(app))
others = sorted({n.split(".")[0] for n in loaded} - {name, "etl_common"})
assert not outside and not others, (outside, others)
"""


@pytest.mark.parametrize("name", SERVICES)
def test_image_layout_imports_every_module_of_the_service(name, tmp_path):
    """/app as the Dockerfile lays it out (etl_common + the service) is all the service needs."""
    app = tmp_path / "app"
    for w, arg in dockerfile(name).instructions:
        if w == "COPY" and arg.startswith("services/"):
            src, dst = arg.split()
            shutil.copytree(
                ROOT / src,
                app / Path(dst).relative_to("/app"),
                ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"),
            )
    env = {**os.environ, "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, name, str(app)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
