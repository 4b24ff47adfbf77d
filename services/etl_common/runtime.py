"""Process start-up shared by the workers: logs, tracing, ops endpoint, SIGTERM handling, the serve loop."""

import gc
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis
import structlog
from tenacity import RetryCallState, retry_if_exception

from etl_common import logs, metrics, retry, tracing
from etl_common.ops import Heartbeat, serve
from etl_common.redis_client import connect, wait_for_redis
from etl_common.retry import RETRYABLE_REDIS
from etl_common.settings import BaseEtlSettings, from_env_file

log = structlog.get_logger(__name__)


class Stopper:
    """Set by SIGTERM/SIGINT; the loops check it between pages so the current page finishes.

    It is the process-wide ``retry.STOP``: every retry wait of the process ends when it is set.
    """

    def __init__(self) -> None:
        self.event = retry.STOP

    def install(self) -> "Stopper":
        """Trap SIGTERM and SIGINT (main thread only, as ``signal.signal`` requires); returns self."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        return self

    def _stop(self, *_: object) -> None:
        self.event.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was asked."""
        return self.event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when a stop was asked."""
        return self.event.wait(seconds)


def start(service: str, settings: BaseEtlSettings, ready: Callable[[], bool]) -> tuple[Heartbeat, Stopper]:
    """Configure logs and tracing, start the ops endpoint, trap signals.

    A busy ops port ends the process with one line naming ``ETL_OPS_PORT`` (exit code 2).
    """
    logs.configure(service, settings.log_level, settings.log_format)
    tracing.configure(service)
    metrics.register(service)  # its own families only: absent() alerts tell which service is gone
    heartbeat = Heartbeat(settings.heartbeat_stale_s)
    if settings.ops_port:
        try:
            serve(settings.ops_host, settings.ops_port, heartbeat, ready)
        except OSError as exc:
            print(
                f"{service}: cannot serve /metrics on {settings.ops_host}:{settings.ops_port} ({exc.strerror}); "
                "choose another port with ETL_OPS_PORT (0 turns the endpoint off)",
                file=sys.stderr,
            )
            raise SystemExit(2) from exc
    return heartbeat, Stopper().install()


def require_writable(service: str, variable: str, path: Path, *, folder: bool = True) -> None:
    """Exit 2 with one line naming ``path``, "not writable" and ``variable`` when the service cannot write there.

    ``folder``: ``path`` is a folder (made when missing) that must take new files; otherwise a file whose folder
    must (SQLite adds its -wal and -shm files beside it) and which, when it exists, must open for writing.
    Tried for real, not with ``os.access``: root passes that check on a read-only mount.
    """
    where = path if folder else path.parent
    what = where
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
        if not folder and path.exists():
            what = path
            with path.open("r+b"):
                pass
    except OSError as exc:
        line = (
            f"{service}: {what} is not writable ({exc.strerror}); {variable}={str(path)!r} must be a place this user "
            f"(uid {os.getuid()}) can write: fix its permissions or mount, or set {variable} elsewhere"
        )
        print(line + from_env_file(line), file=sys.stderr)
        raise SystemExit(2) from None


def wait_for_redis_or_exit(service: str, client: redis.Redis) -> None:
    """Wait for Redis at start-up; one line and exit code 1 when it stays away, exit 0 on SIGTERM."""
    try:
        wait_for_redis(client)
    except RuntimeError as exc:
        print(f"{service}: {exc}; start Redis or fix ETL_REDIS_URL", file=sys.stderr)
        raise SystemExit(1) from None
    except retry.Stopped:
        raise SystemExit(0) from None


class Servable(Protocol):
    """A worker: ``serve()`` runs until a stop is asked."""

    def serve(self) -> None: ...


def run_worker(
    service: str, settings: BaseEtlSettings, build: Callable[[redis.Redis, Heartbeat, Stopper], Servable]
) -> None:
    """Connect to Redis, start logs, tracing, the ops endpoint and the signal traps, wait for Redis, then serve
    the worker ``build`` makes until SIGTERM.

    Exits the process (``SystemExit``) as ``start`` and ``wait_for_redis_or_exit`` do.
    """
    client = connect(settings.redis_url)
    heartbeat, stopper = start(service, settings, ready=client.ping)
    wait_for_redis_or_exit(service, client)
    quiet_collector()
    try:
        build(client, heartbeat, stopper).serve()
    except retry.Stopped:
        pass  # SIGTERM during a wait before the loop: the work owed stays pending for the next start


GC_THRESHOLD = 50_000


def quiet_collector() -> None:
    """Freeze the start-up heap and let the cyclic collector wait for 50,000 new objects instead of 700."""
    # A page's ~15,000 objects live until it is handed on and are then freed by their reference counts, so the
    # collector finds nothing: with the default threshold it still ran about once a page, a deeper pass every ten
    # and a full one over the start-up heap, ~2-3 µs of CPU per user in the transformer (measured with
    # gc.callbacks). A collection still comes every few pages, should cycles ever pile up; peak RSS unchanged.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)


def _recoverable(exc: BaseException) -> bool:
    """A Redis outage, or streams and groups lost with Redis's data (NOGROUP)."""
    return isinstance(exc, RETRYABLE_REDIS) or (isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc))


def _outage_wait(state: RetryCallState) -> float:
    # An outage waits a second between tries; a lost group is re-created and read again at once.
    exc = state.outcome.exception() if state.outcome else None
    return 1.0 if isinstance(exc, RETRYABLE_REDIS) else 0.0


def serve_loop(turn: Callable[[], None], setup: Callable[[], None], heartbeat: Heartbeat, stopper: Stopper) -> None:
    """Call ``turn`` until SIGTERM; a Redis outage backs off and re-creates the groups instead of crashing.

    The retry waits end at once on SIGTERM, so the loop returns within a second or two in every state.
    """

    def recover(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RETRYABLE_REDIS):
            log.warning("redis unavailable; retrying", error=str(exc))
        else:
            log.warning("stream or group missing (redis lost its data?); recreating")
        heartbeat.beat()  # an outage is not a stuck loop: /healthz stays green, /readyz turns red
        _setup_quietly(setup)

    turn_retrying = retry.retrying(retry=retry_if_exception(_recoverable), wait=_outage_wait, before_sleep=recover)
    try:
        while not stopper.stopping:
            heartbeat.beat()
            turn_retrying(turn)
    except retry.Stopped:
        log.info("stop requested during a wait")


def _setup_quietly(setup: Callable[[], None]) -> None:
    try:
        setup()
    except RETRYABLE_REDIS:
        pass  # still down: the next turn fails the same way and we come back here
