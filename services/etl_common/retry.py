"""The services' one retry mechanism: tenacity, with waits that a stop request (SIGTERM) cuts short.

Every wait of a service (Redis at start-up, a Redis outage in the main loop, a source page, an SFTP
upload, a Redis command's own reconnects) sleeps through :func:`sleep`, so SIGTERM ends it at once
instead of after the wait: the process exits within seconds in every state, and what was not
finished keeps its place (entries stay pending, the checkpoint stays, the run stays owed).
"""

import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.retry import Retry
from tenacity import Retrying

# Set once, by the SIGTERM/SIGINT handler (etl_common.runtime.Stopper): the process is stopping.
STOP = threading.Event()


class Stopped(BaseException):
    """A wait was cut short by a stop request.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way treats the
    stop as a failure to log, count or dead-letter.
    """


def sleep(seconds: float) -> None:
    """Sleep ``seconds``; raise :class:`Stopped` as soon as a stop is asked (also when already asked)."""
    if STOP.wait(max(seconds, 0.0)):
        raise Stopped(f"stop requested during a {seconds:.3g}s wait")


def retrying(**kwargs: Any) -> Retrying:
    """``tenacity.Retrying(**kwargs)`` whose waits end with :class:`Stopped` on a stop request."""
    return Retrying(sleep=sleep, **kwargs)


class StoppableRetry(Retry):
    """redis-py's per-command retry (reconnects with backoff), with its waits cut short by a stop."""

    def call_with_retry(
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        """As redis-py's loop (same backoff and count), sleeping through :func:`sleep`."""
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if self._retries >= 0 and failures > self._retries:
                    raise
                sleep(self._backoff.compute(failures))


RETRYABLE_REDIS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
