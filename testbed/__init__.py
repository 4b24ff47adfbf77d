"""Real parts on loopback for the tests, the demo and the benchmarks: Redis, OpenSSH SFTP and the services."""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from etl_common.db import connect_reader
from etl_common.runs import AT_REST

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 15.0, proc: "subprocess.Popen[bytes] | None" = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


def which(name: str, extra: tuple[str, ...] = ("/usr/sbin", "/usr/bin")) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra:
        if Path(d, name).exists():
            return str(Path(d, name))
    return None


@dataclass
class Proc:
    """A child process, leader of its own process group, with its log file and the environment it was given."""

    name: str
    popen: "subprocess.Popen[bytes]"
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout_s``), then SIGKILL to what is left of its process group; its exit code.

        The group is killed while the leader is still unreaped (a zombie), so its id cannot yet belong to another
        process group: its children (the saver's report job, sshd's sessions) do not outlive the stop.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            if not self._exited(timeout_s):
                self.popen.kill()
                self._exited(None)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        return self.popen.returncode

    def _exited(self, timeout_s: float | None) -> bool:
        """Wait until the process has exited, without reaping it; False after ``timeout_s`` (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # reaped meanwhile
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# Set by bind_children(): every process spawned from then on is sent SIGTERM when this one dies.
_PARENT_PID: int | None = None


def bind_children() -> None:
    """Make every child spawned from now on die with this process, however it ends (even SIGKILL).

    Linux's PR_SET_PDEATHSIG, set in the child before it runs the program: the kernel sends the
    child SIGTERM when the thread that spawned it ends, so call spawn from the main thread only.
    Elsewhere (no prctl) children are only stopped by Proc.stop.
    """
    global _PARENT_PID
    _PARENT_PID = os.getpid()


def _die_with_parent() -> None:
    """preexec_fn: ask for SIGTERM when the parent dies, and die now if it already has (a race)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != _PARENT_PID:
        os._exit(1)


def spawn(name: str, args: list[str], logdir: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    """Start ``args`` in a session of its own (a terminal's Ctrl-C goes to the parent, which stops it)."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    fh = log.open("ab")
    bound = _PARENT_PID is not None and sys.platform.startswith("linux")
    popen = subprocess.Popen(
        args,
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd or ROOT,
        start_new_session=True,
        preexec_fn=_die_with_parent if bound else None,
    )
    fh.close()
    return Proc(name, popen, log, dict(env or {}))


@dataclass
class Redis:
    port: int
    dir: Path
    proc: Proc
    aof: bool

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (SIGTERM, AOF flushed) and start again on the same port and data."""
        self.proc.stop()
        time.sleep(down_s)
        self.proc = _redis_proc(self.port, self.dir, self.aof)
        wait_port(self.port, proc=self.proc.popen)
        wait_loaded(self.port, self.proc.popen)


def _redis_proc(port: int, d: Path, aof: bool) -> Proc:
    exe = which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    args = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(d),
        "--save",
        "",
        "--appendonly",
        "yes" if aof else "no",
        "--appendfsync",
        "everysec",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
    ]
    return spawn(f"redis-{port}", args, d)


def start_redis(d: Path, port: int | None = None, aof: bool = True) -> Redis:
    d.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = _redis_proc(port, d, aof)
    wait_port(port, proc=proc.popen)
    wait_loaded(port, proc.popen)
    return Redis(port, d, proc, aof)


def wait_loaded(port: int, proc: "subprocess.Popen[bytes]", timeout_s: float = 120.0) -> None:
    """Until Redis answers PING: it listens while it loads its AOF, and answers every command with LOADING then."""
    import redis

    client = redis.Redis(port=port, socket_timeout=5)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode} while loading its data") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Redis on 127.0.0.1:{port} still loading its data after {timeout_s}s") from None
                time.sleep(0.1)
    finally:
        client.close()


def gen_keys(keys_dir: Path, port: int, passphrase: str = "") -> None:
    """Client key, host keys and a known_hosts pinned to 127.0.0.1:port (scripts/gen-keys.sh)."""
    env = {**os.environ, "SFTP_KEY_PASSPHRASE": passphrase}
    subprocess.run(
        [str(ROOT / "scripts" / "gen-keys.sh"), str(keys_dir), "127.0.0.1", str(port)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Sftp:
    """An OpenSSH server on loopback that only speaks SFTP, with key authentication only."""

    port: int
    dir: Path
    keys_dir: Path
    upload_dir: Path
    proc: Proc | None = None
    user: str = field(default_factory=lambda: _user())
    # SFTP requests the server refuses (internal-sftp -P), e.g. "posix-rename" as on some hardened servers.
    denied_requests: str = ""
    # When set, sessions are served by testbed/sftpstall.py, which stalls while this file exists (``stall``).
    stall_flag: Path | None = None

    def config(self) -> Path:
        cfg = self.dir / "sshd_config"
        sftp = f"internal-sftp -P {self.denied_requests}" if self.denied_requests else "internal-sftp"
        if self.stall_flag is not None:
            sftp = f"{PYTHON} {ROOT / 'testbed' / 'sftpstall.py'} {self.stall_flag}"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {self.keys_dir / 'ssh_host_ed25519_key'}\nHostKey {self.keys_dir / 'ssh_host_rsa_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            f"AllowUsers {self.user}\nSubsystem sftp {sftp}\nForceCommand {sftp}\n"
            "AllowTcpForwarding no\nX11Forwarding no\nLogLevel INFO\n"
        )
        return cfg

    def start(self) -> None:
        exe = which("sshd")
        if not exe:
            raise RuntimeError("sshd is not installed (apt-get install openssh-server)")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        shutil.copy(self.keys_dir / "id_ed25519.pub", self.dir / "authorized_keys")
        self.proc = spawn(f"sshd-{self.port}", [exe, "-D", "-e", "-f", str(self.config())], self.dir)
        wait_port(self.port, proc=self.proc.popen)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def stall(self, after_bytes: int) -> None:
        """From now on each new SFTP session stops answering (SIGSTOP) once ``after_bytes`` came from the client."""
        assert self.stall_flag is not None, "start_sftp(..., stall=True)"
        self.stall_flag.write_text(str(after_bytes))

    def stalled_sessions(self) -> list[int]:
        """Process ids of this server's sessions stopped by ``stall``."""
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # not a process, or gone
            if str(self.stall_flag).encode() in cmdline and state == "T":
                pids.append(int(entry.name))
        return pids

    def answer_again(self) -> None:
        """End the stall: new sessions are served at once, stopped ones resume (and find their client gone)."""
        assert self.stall_flag is not None
        self.stall_flag.unlink(missing_ok=True)
        for pid in self.stalled_sessions():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def env(self) -> dict[str, str]:
        """The saver's settings for this server."""
        return {
            "ETL_SFTP_HOST": "127.0.0.1",
            "ETL_SFTP_PORT": str(self.port),
            "ETL_SFTP_USER": self.user,
            "ETL_SFTP_KEY_PATH": str(self.keys_dir / "id_ed25519"),
            "ETL_SFTP_KNOWN_HOSTS": str(self.keys_dir / "known_hosts"),
            "ETL_SFTP_REMOTE_DIR": str(self.upload_dir),
        }


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def start_sftp(
    d: Path,
    keys_dir: Path,
    upload_dir: Path,
    port: int | None = None,
    passphrase: str = "",
    denied_requests: str = "",
    stall: bool = False,
) -> Sftp:
    """Start an SFTP-only sshd; ``denied_requests``: SFTP requests it refuses (``internal-sftp -P``); ``stall``:
    sessions that can be made to stop answering (``Sftp.stall``)."""
    d.mkdir(parents=True, exist_ok=True)
    upload_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    gen_keys(keys_dir, port, passphrase)
    stall_flag = d / "stall" if stall else None
    server = Sftp(port, d, keys_dir, upload_dir, denied_requests=denied_requests, stall_flag=stall_flag)
    server.start()
    return server


def start_service(name: str, env: dict[str, str], logdir: Path, *args: str, log_name: str = "") -> Proc:
    """``python -m <name> [args]`` with ``env`` on top of a clean environment; logs in ``logdir/<log_name>.log``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env)
    full.setdefault("ETL_LOG_FORMAT", "json")
    label = log_name or (name if not args else f"{name}-{'-'.join(args)}")
    # Run outside the checkout so a developer's .env (read by pydantic-settings from the cwd) cannot leak in.
    logdir.mkdir(parents=True, exist_ok=True)
    return spawn(label, [PYTHON, "-m", name, *args], logdir, full, cwd=logdir)


def output_tails(procs: "dict[str, Proc]", chars: int = 2500) -> str:
    """The last ``chars`` characters of each process's log, headed by its name, for failure messages."""
    return "\n".join(f"--- {name}\n{p.output()[-chars:]}" for name, p in procs.items())


FINAL_STATUSES = tuple(AT_REST)  # what a run waiting for its end waits for (etl_common.runs)
"""Statuses of ``etl_runs`` after which a run changes no more unless something retries it."""


def runs(db: "Path | str") -> list[sqlite3.Row]:
    """Every row of ``etl_runs``, oldest first, read-only; [] while the saver has not created the table."""
    return _read_runs(db, "SELECT * FROM etl_runs ORDER BY id")


def latest_run(db: "Path | str") -> "sqlite3.Row | None":
    """The newest row of ``etl_runs``, read-only; None while the saver has not created it."""
    rows = _read_runs(db, "SELECT * FROM etl_runs ORDER BY id DESC LIMIT 1")
    return rows[0] if rows else None


def reader(db: "Path | str") -> sqlite3.Connection:
    """A read-only connection to the SQLite file ``db``, or to the PostgreSQL database whose URL ``db`` is (the
    saver's sqlite3-shaped adapter: ``?`` placeholders, rows by index and name)."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        from typing import cast

        from etl_common.db import parse_url
        from saver.pgconn import Connection

        return cast(sqlite3.Connection, Connection(connect_reader(parse_url(db))))  # type: ignore[arg-type]
    return connect_reader(db)


def _read_runs(db: "Path | str", sql: str) -> list[sqlite3.Row]:
    if isinstance(db, Path) and not db.exists():
        return []
    try:
        with closing(reader(db)) as conn:
            rows: list[sqlite3.Row] = conn.execute(sql).fetchall()
            return rows
    except sqlite3.OperationalError:  # the saver has not created the table (or the file) yet
        return []


def wait_for_run(
    db: "Path | str",
    statuses: tuple[str, ...] = FINAL_STATUSES,
    timeout_s: float = 60.0,
    *,
    run_id: str | None = None,
    count: int = 1,
    started_after: float | None = None,
    step_s: float = 0.1,
    logs: Callable[[], str] | None = None,
) -> sqlite3.Row:
    """Poll ``etl_runs`` in ``db`` until a run is in one of ``statuses``; the newest such row.

    Only runs with ``run_id`` (when given) and started at or after ``started_after`` (epoch seconds, when
    given; a second of slack for the timestamp's rounding) count; at least ``count`` of them must exist and
    the newest ``count`` must all be in ``statuses``. Raises TimeoutError after ``timeout_s`` seconds, naming
    the last row seen and appending ``logs()`` (e.g. the services' output).
    """
    deadline = time.monotonic() + timeout_s
    matching: list[sqlite3.Row] = []
    while True:
        matching = [
            r
            for r in runs(db)
            if (run_id is None or r["run_id"] == run_id)
            and (started_after is None or _epoch_s(r["started_at"]) >= started_after - 1)
        ]
        newest = matching[-count:]
        if len(newest) == count and all(r["status"] in statuses for r in newest):
            return newest[-1]
        if time.monotonic() >= deadline:
            break
        time.sleep(step_s)
    last = dict(matching[-1]) if matching else None
    extra = f"\n{logs()}" if logs is not None else ""
    raise TimeoutError(f"no run in {statuses} (x{count}) after {timeout_s}s; last: {last}{extra}")


def wait_for_quality(
    db: Path, run_id: str, timeout_s: float = 60.0, *, step_s: float = 0.1, logs: Callable[[], str] | None = None
) -> None:
    """Poll ``run_quality`` in ``db`` until the run's data-quality report is stored.

    The saver computes it in a child process beside the run, so it lands shortly after the run is
    loaded, possibly after the run succeeded. Raises TimeoutError after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if db.exists():
            try:
                with closing(connect_reader(db)) as conn:
                    if conn.execute("SELECT 1 FROM run_quality WHERE run_id = ?", (run_id,)).fetchone():
                        return
            except sqlite3.OperationalError:  # the saver has not created the table yet
                pass
        if time.monotonic() >= deadline:
            break
        time.sleep(step_s)
    extra = f"\n{logs()}" if logs is not None else ""
    raise TimeoutError(f"no quality report for run {run_id} after {timeout_s}s{extra}")


def _epoch_s(iso: str | None) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else 0.0


# The assembler of these parts; imported last, as it builds on the names above.
from testbed.stack import Stack as Stack  # noqa: E402
