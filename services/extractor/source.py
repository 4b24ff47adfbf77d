"""The source client: one page per call, retried with exponential backoff and Retry-After."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from tenacity import RetryCallState, retry_if_exception_type, stop_after_attempt

from etl_common import metrics, retry
from etl_common.errors import PermanentError, TransientError
from extractor.pagejson import QUARANTINE, quarantined, read_page

log = structlog.get_logger(__name__)


class SourceUnavailable(TransientError):
    """A page could not be fetched now; carries the server's Retry-After when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceFailed(PermanentError):
    """Retries for a page are exhausted: the run fails and its checkpoint stays where it was."""


@dataclass
class Page:
    users: list[Any]
    total: int

    def quarantined(self) -> list[str]:
        """Reasons of the records that could not travel as they are (see extractor.pagejson)."""
        return [u[QUARANTINE]["reason"] for u in self.users if quarantined(u)]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class _Wait:
    """The configured delay for this attempt, raised to the server's Retry-After (capped)."""

    def __init__(self, delays: list[float], retry_after_max_s: float) -> None:
        self.delays = delays
        self.cap = retry_after_max_s

    def __call__(self, state: RetryCallState) -> float:
        delay = self.delays[min(state.attempt_number, len(self.delays)) - 1]
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SourceUnavailable) and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self.cap))
        return delay


def fetch_once(client: httpx.Client, url: str, skip: int, limit: int) -> Page:
    """One request; SourceUnavailable on anything a retry may fix."""
    try:
        resp = client.get(url, params={"limit": limit, "skip": skip})
    except httpx.HTTPError as exc:
        metrics.SOURCE_REQUESTS.labels(status="error").inc()
        raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
    metrics.SOURCE_REQUESTS.labels(status=str(resp.status_code)).inc()
    if resp.status_code != 200:
        raise SourceUnavailable(
            f"HTTP {resp.status_code} for skip={skip}",
            parse_retry_after(resp.headers.get("Retry-After")),
        )
    try:
        # Tolerant: one record with a bad value is quarantined (and dead-lettered later), not the whole page.
        body = read_page(resp.content)
    except ValueError as exc:
        raise SourceUnavailable(f"page at skip={skip} is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("users"), list):
        raise SourceUnavailable(f"page at skip={skip} has no 'users' list")
    total = body.get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise SourceUnavailable(f"page at skip={skip} has no valid 'total'")
    return Page(users=body["users"], total=total)


def fetch_page(
    client: httpx.Client,
    url: str,
    skip: int,
    limit: int,
    delays: list[float],
    retry_after_max_s: float,
    on_retry: Callable[[float], None] | None = None,
) -> Page:
    """The page at ``skip``, retried ``len(delays)`` times; SourceFailed when they are exhausted.

    ``on_retry`` is told each wait before a retry (concurrent fetchers all hold back for it).
    """

    def before_sleep(state: RetryCallState) -> None:
        metrics.SOURCE_RETRIES.inc()
        if on_retry is not None:
            on_retry(state.upcoming_sleep)
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "source request failed, retrying",
            skip=skip,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error=str(exc),
        )

    retrying = retry.retrying(
        stop=stop_after_attempt(len(delays) + 1),
        wait=_Wait(delays, retry_after_max_s),
        retry=retry_if_exception_type(SourceUnavailable),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(fetch_once, client, url, skip, limit)
    except SourceUnavailable as exc:
        raise SourceFailed(f"source failed for the page at skip={skip} after {len(delays)} retries: {exc}") from exc
