"""The one assembler of the stack: Redis, SFTP, the source and the services, started in order, stopped in reverse."""

import json
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import testbed as tb

SERVICES = ("transformer", "saver", "api", "extractor")
"""Every service, in the order ``Stack.up`` starts them: the consumers before the producer."""


class Stack:
    """Real parts on loopback for one pipeline: what it starts it stops (``close``, or leaving its ``with``).

    ``base`` holds its data (Redis, sshd, keys, uploads, database, files, logs) unless a path says otherwise.
    ``redis`` and ``sftp``, when given, are shared servers it uses but never stops; ``source_url`` a source it
    does not start. ``settings`` (ETL_* name -> value) lie over what the stack itself sets and under the
    per-service ``overrides`` of ``start``. ``services`` (a subset of ``SERVICES``) and ``replicas``
    (service -> count, each replica with its own consumer name and log) are what ``up`` starts; ``ports``
    (service -> port) sets a worker's ETL_OPS_PORT or the API's ETL_API_PORT.
    """

    def __init__(
        self,
        base: Path,
        *,
        services: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
        ports: Mapping[str, int] | None = None,
        replicas: Mapping[str, int] | None = None,
        redis: "tb.Redis | str | None" = None,
        sftp: "tb.Sftp | None" = None,
        source_url: str | None = None,
        source_args: Sequence[str] = (),
        prefix: str | None = None,
        db_path: Path | None = None,
        data_dir: Path | None = None,
        logdir: Path | None = None,
    ) -> None:
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown service(s) {sorted(unknown)}; the stack has {SERVICES}")
        self.base = base
        self.services = tuple(services)
        self.settings = dict(settings or {})
        self.ports = dict(ports or {})
        self.replicas = dict(replicas or {})
        self.redis_url = redis if isinstance(redis, str) else redis.url if redis else None
        self.redis: tb.Redis | None = redis if isinstance(redis, tb.Redis) else None
        self.sftp = sftp
        self.source_url = source_url
        self.source_args = list(source_args)
        self.prefix = prefix
        self.db_path = db_path or base / "database" / "data.db"
        self.data_dir = data_dir or base / "data"
        self.logdir = logdir or base / "logs"
        # Every process this stack started, by role, in start order (stopped in the reverse).
        self.procs: dict[str, tb.Proc] = {}

    def __enter__(self) -> "Stack":
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb_: TracebackType | None) -> None:
        self.close()

    def up(self, services: Sequence[str] | None = None) -> "Stack":
        """Start what ``services`` need and is missing, in order (Redis, the saver's SFTP server, the extractor's
        source), then the services; wait until each is ready."""
        names = self.services if services is None else tuple(services)
        if self.redis_url is None:
            self.start_redis()
        sftp_off = self.settings.get("ETL_SFTP_ENABLED", "true").lower() in ("false", "0", "no", "off")
        if "saver" in names and self.sftp is None and "ETL_SFTP_HOST" not in self.settings and not sftp_off:
            self.start_sftp()
        if "extractor" in names and self.source_url is None and "ETL_SOURCE_URL" not in self.settings:
            self.start_source(*self.source_args)
        started = []
        for name in names:
            count = self.replicas.get(name)
            if count is None:
                started.append(self.start(name, wait=False, **self._port(name)))
                continue
            for i in range(1, count + 1):
                tag = f"{name}-{i}"
                started.append(self.start(name, tag=tag, wait=False, ETL_CONSUMER_NAME=tag, **self._port(name)))
        for proc in started:
            self.wait_ready(proc)
        return self

    def _port(self, name: str) -> dict[str, str]:
        if name not in self.ports:
            return {}
        return {"ETL_API_PORT" if name == "api" else "ETL_OPS_PORT": str(self.ports[name])}

    def start_redis(self, dir: Path | None = None, aof: bool = True) -> "tb.Redis":
        """A redis-server of this stack's own (``base/redis`` unless ``dir``), waited for."""
        self.redis = tb.start_redis(dir or self.base / "redis", aof=aof)
        self.redis_url = self.redis.url
        self.procs["redis"] = self.redis.proc
        return self.redis

    def start_sftp(
        self, dir: Path | None = None, keys_dir: Path | None = None, upload_dir: Path | None = None
    ) -> "tb.Sftp":
        """An SFTP-only sshd of this stack's own, with fresh keys, waited for."""
        self.sftp = tb.start_sftp(
            dir or self.base / "sshd", keys_dir or self.base / "ssh_keys", upload_dir or self.base / "upload"
        )
        assert self.sftp.proc is not None  # started
        self.procs["sshd"] = self.sftp.proc
        return self.sftp

    def start_source(self, *args: str) -> str:
        """The DummyJSON-compatible server as a process (``python -m dummyjson`` with ``args``); its /users URL."""
        port = tb.free_port()
        proc = tb.spawn("source", [tb.PYTHON, "-m", "dummyjson", "--port", str(port), *args], self.logdir)
        self.procs["source"] = proc
        tb.wait_port(port, proc=proc.popen)
        self.source_url = f"http://127.0.0.1:{port}/users"
        return self.source_url

    def env(self, **overrides: str) -> dict[str, str]:
        """A service's ETL_* settings: the stack's parts and paths, then ``settings``, then ``overrides``."""
        env = {"ETL_DB_PATH": str(self.db_path), "ETL_DATA_DIR": str(self.data_dir)}
        if self.redis_url:
            env["ETL_REDIS_URL"] = self.redis_url
        if self.source_url:
            env["ETL_SOURCE_URL"] = self.source_url
        if self.prefix is not None:
            env["ETL_KEY_PREFIX"] = self.prefix
        if self.sftp is not None:
            env.update(self.sftp.env())
        return {**env, **self.settings, **overrides}

    def start(self, name: str, *args: str, tag: str = "", wait: bool = True, **overrides: str) -> "tb.Proc":
        """``python -m <name> [args]`` with ``env(**overrides)``, in ``procs`` as ``tag`` or ``name``; waited for
        unless ``wait`` is false or it is a command (``args``). Its log: ``<tag>.log``, else ``<name>[-<args>].log``."""
        proc = tb.start_service(name, self.env(**overrides), self.logdir, *args, log_name=tag)
        self.procs[tag or name] = proc
        if wait and not args:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: "tb.Proc", timeout_s: float = 60.0) -> None:
        """Until the API listens on its port or a worker logs ``<service> ready`` (its groups made, about to serve).

        RuntimeError naming the process and its last words when it exits first; TimeoutError after ``timeout_s``.
        """
        service = proc.name.split("-")[0]
        deadline = time.monotonic() + timeout_s
        if service == "api":
            port = int(proc.env.get("ETL_API_PORT", "8000"))
            try:
                tb.wait_port(port, timeout_s, proc=proc.popen)
            except RuntimeError:
                raise RuntimeError(f"{proc.name} exited at start: {last_words(proc)}") from None
            return
        word = f"{service} ready"
        while word not in proc.output():
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited at start: {last_words(proc)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready after {timeout_s}s: {last_words(proc)}")
            time.sleep(0.05)

    def stop(self, role: str) -> int | None:
        """Stop one process (SIGTERM, then SIGKILL, its process group too); its exit code."""
        return self.procs[role].stop()

    def close(self) -> None:
        """Stop every process this stack started, the last started first (shared servers are left running)."""
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def logs(self, chars: int = 3000) -> str:
        """The tail of every process's output, for failure messages."""
        return tb.output_tails(self.procs, chars)


def how_it_ended(proc: "tb.Proc") -> str:
    """How a process that ended did: "exited with code N", or "was killed by SIGNAME" (a signal not its own)."""
    code = proc.popen.poll()
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def last_words(proc: "tb.Proc") -> str:
    """The last line a process logged: a JSON line's event and error, else the text."""
    for line in reversed(proc.output().splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return line.strip()
        if isinstance(record, dict):
            return "; ".join(str(record[k]) for k in ("event", "error") if record.get(k)) or line.strip()
        return line.strip()
    return "no output"
