"""Pages fetched ahead, several at once once `total` is known, and given back strictly in `skip` order."""

import contextvars
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import httpx
import structlog

from etl_common import retry
from extractor.settings import ExtractorSettings
from extractor.source import Page, fetch_page

log = structlog.get_logger(__name__)


class Gate:
    """A time before which no fetcher sends a request: a retry wait (a 429's Retry-After) holds every fetcher."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.not_before = 0.0

    def hold(self, seconds: float) -> None:
        """No new request for ``seconds`` from now (a later hold wins)."""
        with self.lock:
            self.not_before = max(self.not_before, time.monotonic() + seconds)

    def wait(self) -> None:
        """Wait until requests may go (a stop cuts the wait short with ``retry.Stopped``)."""
        while (left := self.not_before - time.monotonic()) > 0:
            retry.sleep(left)


class Fetcher:
    """Up to ``ETL_FETCH_CONCURRENCY`` page requests in flight ahead of the page being handed on.

    Only the run's next page is ever handed on (``get``), so pages stay in order and the checkpoint moves over
    a contiguous prefix; requests ahead are planned at ``next_skip + k * page_size`` below the known total.
    A page shorter than asked shifts the offsets: requests planned at other offsets are dropped (``plan``).
    """

    def __init__(self, settings: ExtractorSettings, http: httpx.Client) -> None:
        self.settings, self.http = settings, http
        self.gate = Gate()
        self.pool = ThreadPoolExecutor(max(settings.fetch_concurrency, 1), thread_name_prefix="fetch")
        self.ahead: dict[int, Future[Page]] = {}

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for future in self.ahead.values():
            future.cancel()
        # Requests already in flight end on their own (deadline, or a stop cutting their retry waits).
        self.pool.shutdown(wait=False, cancel_futures=True)

    def fetch(self, skip: int) -> Page:
        """The page at ``skip``, in this thread, after any hold of the gate."""
        self.gate.wait()
        s = self.settings
        return fetch_page(
            self.http, s.source_url, skip, s.page_size, s.retry_delays, s.retry_after_max_s, self.gate.hold
        )

    def get(self, skip: int) -> Page:
        """The page at ``skip``: the one fetched ahead when there is one, else fetched now."""
        future = self.ahead.pop(skip, None)
        return future.result() if future is not None else self.fetch(skip)

    def plan(self, next_skip: int, total: int) -> None:
        """Keep ``fetch_concurrency`` requests going for the pages from ``next_skip`` on, below ``total``."""
        size, width = self.settings.page_size, self.settings.fetch_concurrency
        wanted = [next_skip + k * size for k in range(width) if next_skip + k * size < total] if width > 1 else []
        for skip in [s for s in self.ahead if s not in wanted]:
            self.ahead.pop(skip).cancel()  # offsets shifted by a short page: never handed on
        for skip in wanted:
            if skip not in self.ahead:
                # The copied context keeps the run id on the fetchers' log lines and the run's trace.
                ctx = contextvars.copy_context()
                self.ahead[skip] = self.pool.submit(ctx.run, self.fetch, skip)
