"""A private Docker engine for tests: its own dockerd, the stand-in base images, and the project's images.

The daemon has its own socket, data root, exec root and pidfile, so any other Docker on the machine is
left alone. It runs without the default bridge and without iptables rules: containers reach each other
only on networks the tests create, nothing outside the machine; builds use the host's network so pip
reaches the package index. No image registry is reachable here, so the images the project's Dockerfile
and compose file name (python:*-alpine, redis:*-alpine, atmoz/sftp, postgres) are local stand-ins built on a
Debian root filesystem made by mmdebstrap (testbed/standins/). Needs root.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "standins"
BASE = "etl-standin/debian:bookworm"
# What the stand-ins need from Debian: Python for the service images, redis-server, sshd for SFTP, PostgreSQL.
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,redis-server,openssh-server,bash,postgresql"
# This machine's CA bundle and pip configuration: pip inside a build needs them to reach the index.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CONFIG = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"))


class EngineError(RuntimeError):
    """The engine could not be started or a docker command failed; the message holds its output."""


def usable() -> str:
    """'' when a private engine can run here, else why not (not root, no dockerd and no apt-get)."""
    if os.geteuid() != 0:
        return "the private Docker engine needs root (dockerd)"
    if not shutil.which("dockerd") and not shutil.which("apt-get"):
        return "no dockerd and no apt-get to install docker.io"
    return ""


def install_packages() -> None:
    """Debian's docker.io (daemon and client) and mmdebstrap, when missing (as root)."""
    need = [p for p, tool in (("docker.io", "dockerd"), ("mmdebstrap", "mmdebstrap")) if not shutil.which(tool)]
    if need:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], check=True, env=env)


class Engine:
    """One private dockerd: start(), docker(...), then close() removes all it made and stops it."""

    def __init__(self, name: str = "", keep_images: bool = False) -> None:
        # One daemon per checkout: engine tests of two checkouts on one machine never share or stop each other's.
        self.name = name or f"etl-engine-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
        self.keep_images = keep_images
        self.sock = Path(f"/run/{self.name}.sock")
        self.data_root = Path(f"/var/lib/{self.name}")
        self.exec_root = Path(f"/run/{self.name}-exec")
        self.pidfile = Path(f"/run/{self.name}.pid")
        self.log = Path(tempfile.gettempdir()) / f"{self.name}-dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.python_image = ""  # the stand-in Python image, once built
        self.started = time.monotonic()
        # Debian's client matches its daemon; another client on PATH may be newer than the daemon.
        self.client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker and docker-compose: this daemon, the classic builder (no registry for BuildKit)."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}

    def start(self, timeout_s: float = 90) -> None:
        self._stop_stale()
        self.exec_root.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            self.proc = self._spawn(log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"dockerd exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if subprocess.run([self.client, "version"], env=self.env, capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise EngineError(f"dockerd did not answer in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def _spawn(self, log: IO[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                shutil.which("dockerd") or "/usr/sbin/dockerd",
                "-H",
                f"unix://{self.sock}",
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.pidfile),
                # No docker0 and no iptables: only the networks the tests create, no route out.
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=true",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _stop_stale(self) -> None:
        """A daemon of this name left by a run that was killed: stop it by its pidfile."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if "dockerd" in cmdline and str(self.sock) in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600, **kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run the docker client on this daemon; output captured (text unless text=False); EngineError on failure."""
        kw.setdefault("text", True)
        out = subprocess.run([self.client, *args], env=self.env, capture_output=True, timeout=timeout, **kw)
        if check and out.returncode != 0:
            stdout, stderr = (s if isinstance(s, str) else s.decode(errors="replace") for s in (out.stdout, out.stderr))
            raise EngineError(f"docker {' '.join(args)} exited {out.returncode}:\n{stdout[-2000:]}{stderr[-3000:]}")
        return out

    def has_image(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, check=False).returncode == 0

    def close(self) -> None:
        """Remove the containers, networks, volumes (and images unless kept), stop the daemon, delete its folders."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                ids = self.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    self.docker("rm", "-f", "-v", *ids, check=False)
                self.docker("network", "prune", "-f", check=False)
                self.docker("volume", "prune", "-f", check=False)
                if not self.keep_images:
                    self.docker("system", "prune", "-a", "-f", "--volumes", check=False)
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
            _remove_tree(self.exec_root)
            self.sock.unlink(missing_ok=True)
            self.pidfile.unlink(missing_ok=True)
            if not self.keep_images:
                _remove_tree(self.data_root)

    # --- images ------------------------------------------------------------------------------------
    def build_base(self, workdir: Path) -> None:
        """The Debian root filesystem (mmdebstrap, from the apt mirror this machine uses) as BASE."""
        if self.has_image(BASE):
            return
        tar = workdir / "base.tar"
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(tar)],
            check=True,
            timeout=900,
        )
        self.docker("import", str(tar), BASE)
        tar.unlink()

    def build_standins(self, workdir: Path, tags: dict[str, str]) -> None:
        """Stand-ins tagged with the names the project uses: tags maps python/redis/sftp/postgres to an image name."""
        ctx = workdir / "standins"
        shutil.copytree(STANDINS, ctx, dirs_exist_ok=True)
        shutil.copy(CA_BUNDLE, ctx / "ca-certificates.crt")
        pip = ctx / "pip"
        pip.mkdir(exist_ok=True)
        (pip / "xdg" / "pip").mkdir(parents=True, exist_ok=True)
        if PIP_CONFIG[0].exists():
            shutil.copy(PIP_CONFIG[0], pip / "pip.conf")
        if PIP_CONFIG[1].is_dir():
            shutil.copytree(PIP_CONFIG[1], pip / "xdg" / "pip", dirs_exist_ok=True)
        for kind, tag in tags.items():
            if not self.has_image(tag):
                self.docker(
                    "build", "--network", "host", "-q", "-f", str(ctx / f"{kind}.Dockerfile"), "-t", tag, str(ctx)
                )

    def build_service(self, service: str, tag: str) -> None:
        """One project image from the project's Dockerfile as it is, SERVICE naming the service."""
        self.docker(
            "build", "--network", "host", "-q", "--build-arg", f"SERVICE={service}", "-f", str(ROOT / "Dockerfile"),
            "-t", tag, str(ROOT), timeout=900,
        )  # fmt: skip


def _remove_tree(path: Path) -> None:
    """A folder of the daemon; mounts left under it (overlays, network namespaces) are unmounted first."""
    if not path.exists():
        return
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
