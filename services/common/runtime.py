"""Process start-up shared by the workers: logs, tracing, ops endpoint, SIGTERM handling."""

import signal
import threading

from etl_common import logs, tracing
from etl_common.ops import Heartbeat, serve
from etl_common.settings import BaseEtlSettings


class Stopper:
    """Set by SIGTERM/SIGINT; the loops check it between pages so the current page finishes."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> "Stopper":
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        return self

    def _stop(self, *_: object) -> None:
        self.event.set()

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when a stop was asked."""
        return self.event.wait(seconds)


def start(service: str, settings: BaseEtlSettings, ready) -> tuple[Heartbeat, Stopper]:
    """Configure logs and tracing, start the ops endpoint, trap signals."""
    logs.configure(service, settings.log_level, settings.log_format)
    tracing.configure(service)
    heartbeat = Heartbeat(settings.heartbeat_stale_s)
    if settings.ops_port:
        serve(settings.ops_host, settings.ops_port, heartbeat, ready)
    return heartbeat, Stopper().install()
