"""Redis connections with retries on connection loss and a bounded wait at start-up."""

import redis
import structlog
from redis.backoff import ExponentialBackoff
from tenacity import retry_if_exception_type, stop_after_delay, wait_exponential

from etl_common import retry
from etl_common.retry import RETRYABLE_REDIS

log = structlog.get_logger(__name__)


def connect(url: str) -> redis.Redis:
    """A client that retries a command across short connection losses (waits cut short by SIGTERM)."""
    return redis.Redis.from_url(
        url,
        # About 15 s of retries: long enough to ride out a Redis restart without failing a page.
        retry=retry.StoppableRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=12),
        retry_on_error=list(RETRYABLE_REDIS),
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=5,
    )


def wait_for_redis(client: redis.Redis, timeout_s: float = 60.0) -> None:
    """Block until Redis answers PING, logging while waiting.

    Raises RuntimeError after ``timeout_s`` seconds, ``retry.Stopped`` on SIGTERM.
    """
    waiting = retry.retrying(
        retry=retry_if_exception_type(RETRYABLE_REDIS),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        stop=stop_after_delay(timeout_s),
        before_sleep=lambda state: log.warning(
            "waiting for redis", error=str(state.outcome.exception() if state.outcome else "")
        ),
        reraise=True,
    )
    try:
        waiting(client.ping)
    except RETRYABLE_REDIS as exc:
        raise RuntimeError(f"Redis not reachable after {timeout_s:.0f}s: {exc}") from exc


RETRYABLE_ERRORS = RETRYABLE_REDIS
