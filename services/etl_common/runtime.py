"""Process start-up shared by the workers: logs, tracing, ops endpoint, SIGTERM handling."""

import signal
import threading
from collections.abc import Callable

import redis
import structlog

from etl_common import logs, tracing
from etl_common.ops import Heartbeat, serve
from etl_common.redis_client import RETRYABLE_ERRORS
from etl_common.settings import BaseEtlSettings

log = structlog.get_logger(__name__)


class Stopper:
    """Set by SIGTERM/SIGINT; the loops check it between pages so the current page finishes."""

    def __init__(self) -> None:
        self.event = threading.Event()

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
    """Configure logs and tracing, start the ops endpoint, trap signals."""
    logs.configure(service, settings.log_level, settings.log_format)
    tracing.configure(service)
    heartbeat = Heartbeat(settings.heartbeat_stale_s)
    if settings.ops_port:
        serve(settings.ops_host, settings.ops_port, heartbeat, ready)
    return heartbeat, Stopper().install()


def serve_loop(turn: Callable[[], None], setup: Callable[[], None], heartbeat: Heartbeat, stopper: Stopper) -> None:
    """Call ``turn`` until SIGTERM; a Redis outage backs off and re-creates the groups instead of crashing."""
    while not stopper.stopping:
        heartbeat.beat()
        try:
            turn()
        except RETRYABLE_ERRORS as exc:
            log.warning("redis unavailable; retrying", error=str(exc))
            stopper.sleep(1.0)
            _setup_quietly(setup)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("stream or group missing (redis lost its data?); recreating")
            _setup_quietly(setup)


def _setup_quietly(setup: Callable[[], None]) -> None:
    try:
        setup()
    except RETRYABLE_ERRORS:
        pass  # still down: the next turn fails the same way and we come back here
