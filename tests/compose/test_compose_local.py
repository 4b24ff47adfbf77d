"""docker-compose.yml run as local processes: its commands and environments against real Redis, OpenSSH and a source.

What Docker would do is done by hand: the service names redis and sftp point at loopback servers,
container paths at temporary folders, container ports at free ports. Everything else (commands,
variables, start order, health checks, SIGTERM) comes from the compose file and the Dockerfiles.
"""

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

import testbed as tb
from tests.compose.composefile import SERVICES, Mount, dockerfile, example_env, load, mounts, service_env

pytestmark = pytest.mark.slow


def _start_order(model: dict) -> list[str]:
    """The four services in depends_on order, as Compose starts them."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in model["services"][name].get("depends_on") or {}:
            visit(dep)
        if name in SERVICES and name not in order:
            order.append(name)

    for name in SERVICES:
        visit(name)
    return order


class LocalCompose:
    """Translates the compose model to local processes on this host."""

    def __init__(self, tmp: Path, redis_port: int, sftp, source_url: str) -> None:
        self.tmp, self.sftp = tmp, sftp
        self.env_file = example_env()
        self.model = load(self.env_file)
        self.hosts = {"redis": ("127.0.0.1", redis_port), "sftp": ("127.0.0.1", sftp.port)}
        self.source_url = source_url
        # Host folders of the bind mounts: ssh_keys is the test server's key folder (same file names).
        self.sources = {
            "./ssh_keys": sftp.keys_dir,
            "./database": tmp / "database",
            "./data": tmp / "data",
            "./sftp_data": tmp / "sftp_data",
            # Configuration shipped in the repository (the data contract): the checkout's own folder.
            "./services/transformer/contracts": tb.ROOT / "services" / "transformer" / "contracts",
        }
        for d in ("database", "data", "sftp_data"):
            (tmp / d).mkdir()
        self.ports: dict[str, int] = {}
        # Read-only folder mounts (the API's database) as real read-only bind mounts when this host
        # allows a private mount namespace (root with unshare); otherwise the folder itself.
        self.read_only_binds = _can_bind_read_only(tmp)
        self.binds: dict[str, dict[Path, Path]] = {}

    def host_path(self, source: str) -> Path:
        for prefix, local in self.sources.items():
            if source == prefix or source.startswith(prefix + "/"):
                return Path(local) / source[len(prefix) :].lstrip("/")
        raise KeyError(source)

    def env(self, name: str, container: str = "") -> dict[str, str]:
        """The environment of a container of ``name`` (``container`` names a further one, e.g. of compose run)."""
        env = service_env(self.model, name, self.env_file)
        targets = {m.target: self.local_mount(name, m) for m in mounts(self.model["services"][name])}
        for key, value in env.items():
            for target, local in targets.items():
                if value == target or value.startswith(target + "/"):
                    env[key] = str(local) + value[len(target) :]
        url = urlsplit(env["ETL_REDIS_URL"])
        if url.hostname in self.hosts:
            host, port = self.hosts[url.hostname]
            env["ETL_REDIS_URL"] = urlunsplit(url._replace(netloc=f"{host}:{port}"))
        if env.get("ETL_SFTP_HOST") in self.hosts:
            env["ETL_SFTP_HOST"], port = self.hosts[env["ETL_SFTP_HOST"]]
            env["ETL_SFTP_PORT"] = str(port)
            env["ETL_SFTP_USER"] = self.sftp.user
            env["ETL_SFTP_REMOTE_DIR"] = str(self.remote_dir(env["ETL_SFTP_REMOTE_DIR"]))
        # The internet source is replaced by the local DummyJSON-compatible server.
        env["ETL_SOURCE_URL"] = self.source_url
        # Each container has its own network namespace; here each gets its own loopback port.
        port = self.ports.setdefault(container or name, tb.free_port())
        for host_var, port_var in (("ETL_OPS_HOST", "ETL_OPS_PORT"), ("ETL_API_HOST", "ETL_API_PORT")):
            if env.get(host_var) == "0.0.0.0":
                env[host_var] = "127.0.0.1"
        env["ETL_API_PORT" if name == "api" else "ETL_OPS_PORT"] = str(port)
        return env

    def remote_dir(self, remote: str) -> Path:
        """Where atmoz puts ``remote`` (relative to the chroot /home/<user>): the host side of that mount."""
        sftp = self.model["services"]["sftp"]
        user = sftp["command"][0].split(":")[0]
        target = f"/home/{user}/{remote}"
        return next(self.host_path(m.source) for m in mounts(sftp) if m.target == target)

    def local_mount(self, name: str, m: Mount) -> Path:
        """Where the service sees the mount: the host path, or a read-only bind of it."""
        host = self.host_path(m.source)
        if not (m.read_only and host.is_dir() and self.read_only_binds):
            return host
        seen = self.tmp / "ro" / name / m.target.strip("/").replace("/", "_")
        seen.mkdir(parents=True, exist_ok=True)
        self.binds.setdefault(name, {})[host] = seen
        return seen

    def argv(self, name: str) -> list[str]:
        cmd = list(self.model["services"][name]["command"])
        argv = [tb.PYTHON if cmd[0] == "python" else cmd[0], *cmd[1:]]
        self.env(name)  # resolves the mounts, read-only binds included
        for host, seen in self.binds.get(name, {}).items():
            argv = [*_RO_BIND, str(host), str(seen), *argv]
        return argv

    def process_env(self, name: str, container: str = "") -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        return {**base, **self.env(name, container)}

    def healthy(self, name: str) -> bool:
        """The image's HEALTHCHECK command, run with the service's environment."""
        cmd = dockerfile(name).exec_form("HEALTHCHECK")
        argv = [tb.PYTHON if cmd[0] == "python" else cmd[0], *cmd[1:]]
        env = {**self.process_env(name), "ETL_SERVICE": name}  # set by the image (ENV ETL_SERVICE=${SERVICE})
        return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode == 0


# unshare -m sh -c '...' sh HOST SEEN CMD...: a private mount namespace, then exec the command.
_RO_BIND = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$2" && shift 2 && exec "$@"', "sh"]


def _can_bind_read_only(tmp: Path) -> bool:
    probe_a, probe_b = tmp / "probe-a", tmp / "probe-b"
    probe_a.mkdir()
    probe_b.mkdir()
    try:
        done = subprocess.run(
            [*_RO_BIND, str(probe_a), str(probe_b), "sh", "-c", '! touch "$0/x" 2>/dev/null', str(probe_b)],
            capture_output=True,
            timeout=10,
        )
    except OSError:
        return False
    return done.returncode == 0 and not (probe_a / "x").exists()


def _start_redis_as_compose_does(model: dict, d: Path) -> tb.Proc:
    cmd = model["services"]["redis"]["command"]
    port = tb.free_port()
    proc = tb.spawn(
        "redis", [tb.which(cmd[0]) or cmd[0], *cmd[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d)], d
    )
    tb.wait_port(port, proc=proc.popen)
    proc.port = port  # type: ignore[attr-defined]
    return proc


def _wait_healthy(stack: LocalCompose, name: str, proc: tb.Proc, timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.alive(), f"{name} exited with {proc.popen.returncode}:\n{proc.output()[-3000:]}"
        if stack.healthy(name):
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} not healthy after {timeout_s}s:\n{proc.output()[-3000:]}")


def _wait_runs(db: Path, count: int, timeout_s: float, procs: dict) -> list[sqlite3.Row]:
    """Every run, once ``count`` of them have succeeded."""
    tb.wait_for_run(db, ("succeeded",), timeout_s, count=count, step_s=0.2, logs=lambda: tb.output_tails(procs))
    return tb.runs(db)


def test_compose_services_complete_a_run_as_local_processes(tmp_path, sftp_server, make_source):
    source = make_source(count=208, bad_every=9)
    model = load(example_env())
    redis = _start_redis_as_compose_does(model, tmp_path / "redis")
    stack = LocalCompose(tmp_path, redis.port, sftp_server, source.url)  # type: ignore[attr-defined]
    workdir = tmp_path / "workdir"  # the image's WORKDIR: no .env there, settings come from the environment
    workdir.mkdir()
    procs: dict[str, tb.Proc] = {}
    try:
        for name in _start_order(model):
            procs[name] = tb.spawn(name, stack.argv(name), tmp_path / "logs", stack.process_env(name), cwd=workdir)
            _wait_healthy(stack, name, procs[name])

        # ETL_RUN_ON_START=true in .env.example: `docker compose up` alone performs the first run.
        db = Path(stack.env("saver")["ETL_DB_PATH"])
        (run,) = _wait_runs(db, 1, 90, procs)
        assert run["valid_count"] + run["invalid_count"] == 208 and run["invalid_count"] > 0
        upload = stack.remote_dir(stack.env_file["ETL_SFTP_REMOTE_DIR"])
        # Encryption is on in compose: the files arrive as age files, readable with `make keys`' identity.
        uploaded = sorted(str(p.relative_to(upload)) for p in upload.rglob("*.jsonl*"))
        assert uploaded == sorted(run[k] + ".age" for k in ("raw_file", "processed_file", "dlq_file"))
        plain = tmp_path / "processed.jsonl"
        subprocess.run(
            [
                tb.PYTHON,
                "-m",
                "saver",
                "decrypt",
                "--identity",
                str(sftp_server.keys_dir / "age_identity.txt"),
                str(upload / (run["processed_file"] + ".age")),
                str(plain),
            ],
            check=True,
            cwd=workdir,
        )
        assert len(plain.read_text().splitlines()) == run["valid_count"]
        assert db.parent == tmp_path / "database" and not any((tmp_path / "data").glob("*.part"))

        # The API as a client reaches it (published port 8000), with the token of .env.example.
        api = f"http://127.0.0.1:{stack.ports['api']}"
        token = {"Authorization": f"Bearer {stack.env_file['ETL_API_TOKEN']}"}
        assert httpx.get(f"{api}/etl_runs", timeout=10).status_code == 401
        listed = httpx.get(f"{api}/etl_runs", headers=token, timeout=10)
        assert listed.status_code == 200, listed.text
        assert [r["processed_file"] for r in listed.json()] == [run["processed_file"]]
        api_db = stack.env("api")["ETL_DB_PATH"]
        print(f"API database seen at {api_db} ({'read-only bind' if stack.binds.get('api') else 'plain folder'})")

        # `docker compose run --rm extractor python -m extractor once`: one more run, now, in a new
        # container (its own ops port; `exec` would share the running extractor's port 9100).
        once = subprocess.run(
            [*stack.argv("extractor"), "once"],
            env=stack.process_env("extractor", "run-once"),
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert once.returncode == 0, once.stdout[-2000:] + once.stderr[-2000:]
        runs = _wait_runs(db, 2, 60, procs)
        assert len({r["run_id"] for r in runs}) == 2

        # POST /etl_runs: the API asks the running extractor through Redis.
        asked = httpx.post(f"{api}/etl_runs", headers=token, timeout=10)
        assert asked.status_code == 202, asked.text
        runs = _wait_runs(db, 3, 60, procs)
        assert len({r["run_id"] for r in runs}) == 3
        # The API's reader (read-only mount) sees what the saver committed since it opened.
        listed = httpx.get(f"{api}/etl_runs", headers=token, timeout=10).json()
        assert sorted(r["processed_file"] for r in listed) == sorted(r["processed_file"] for r in runs)

        # `docker compose stop`: SIGTERM, then a clean exit within stop_grace_period.
        for name in reversed(_start_order(model)):
            grace = float(model["services"][name]["stop_grace_period"].rstrip("s"))
            procs[name].popen.send_signal(signal.SIGTERM)
            code = procs[name].popen.wait(grace)
            log = procs[name].output()
            # uvicorn re-raises the signal once it has shut down gracefully (exit 143 under Docker).
            clean = code == 0 or (name == "api" and code == -signal.SIGTERM and "shutdown complete" in log)
            assert clean, f"{name} exited {code} on SIGTERM:\n{log[-2000:]}"
    finally:
        for proc in procs.values():
            proc.stop()
        redis.stop()
