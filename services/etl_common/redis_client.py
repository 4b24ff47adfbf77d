"""Redis connections with retries on connection loss and a bounded wait at start-up."""

import time

import redis
import structlog
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

log = structlog.get_logger(__name__)

_RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def connect(url: str) -> redis.Redis:
    """A client that retries a command across short connection losses."""
    return redis.Redis.from_url(
        url,
        # About 15 s of retries: long enough to ride out a Redis restart without failing a page.
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=12),
        retry_on_error=list(_RETRYABLE),
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=5,
    )


def wait_for_redis(client: redis.Redis, timeout_s: float = 60.0) -> None:
    """Block until Redis answers PING, logging while waiting; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            client.ping()
            return
        except _RETRYABLE as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis not reachable after {timeout_s:.0f}s: {exc}") from exc
            log.warning("waiting for redis", error=str(exc))
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


RETRYABLE_ERRORS = _RETRYABLE
