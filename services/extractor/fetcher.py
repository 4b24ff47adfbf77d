"""Pages fetched ahead, several at once once `total` is known, and given back strictly in `skip` order."""

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType

import httpx
import structlog

from etl_common import retry
from extractor.settings import ExtractorSettings
from extractor.source import Bounds, Page, fetch_page

log = structlog.get_logger(__name__)


class FetcherClosed(Exception):
    """The run no longer wants this page (it ended, failed or stopped): the request is not retried."""


class Gate:
    """A time before which no fetcher sends a request: a retry wait (a 429's Retry-After) holds every fetcher."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.not_before = 0.0

    def hold(self, seconds: float) -> None:
        """No new request for ``seconds`` from now (a later hold wins)."""
        with self.lock:
            self.not_before = max(self.not_before, time.monotonic() + seconds)

    def wait(self, closed: threading.Event) -> None:
        """Wait until requests may go; FetcherClosed once ``closed`` is set (a stop: ``retry.Stopped``)."""
        while (left := self.not_before - time.monotonic()) > 0:
            if closed.wait(min(left, 0.1)):
                break
            retry.sleep(0)
        if closed.is_set():
            raise FetcherClosed("the run no longer needs this page")


class Fetcher:
    """Up to ``ETL_FETCH_CONCURRENCY`` page requests in flight ahead of the page being handed on.

    Only the run's next page is ever handed on (``get``), so pages stay in order and the checkpoint moves over
    a contiguous prefix; requests ahead are planned at ``next_skip + k * page_size`` below the known total.
    A page shorter than asked shifts the offsets: requests planned at other offsets are dropped (``plan``).
    """

    def __init__(self, settings: ExtractorSettings, http: httpx.Client, alive: Callable[[], None]) -> None:
        self.settings, self.http, self.alive = settings, http, alive
        self.bounds = Bounds.of(settings)
        self.gate = Gate()
        # Requests in flight, abandoned ones included (their answer may still be on its way).
        self.slots = threading.BoundedSemaphore(max(settings.fetch_concurrency, 1))
        self.ahead: dict[int, Future[Page]] = {}
        self.closed = threading.Event()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Requests still in flight are abandoned: their daemon threads keep no process alive, and ``closed``
        # keeps them from retrying or starting.
        self.closed.set()
        for future in self.ahead.values():
            future.cancel()

    def fetch(self, skip: int) -> Page:
        """The page at ``skip``, in this thread, after any hold of the gate."""
        self.gate.wait(self.closed)
        s = self.settings
        return fetch_page(
            self.http,
            s.source_url,
            skip,
            s.page_size,
            s.retry_delays,
            s.retry_after_max_s,
            self.bounds,
            self.alive,
            self._retry,
        )

    def _retry(self, wait_s: float) -> None:
        """Before a retry: hold every fetcher for its wait, or end the request when the run is over."""
        if self.closed.is_set():
            raise FetcherClosed("the run no longer needs this page")
        self.gate.hold(wait_s)

    def get(self, skip: int) -> Page:
        """The page at ``skip``: the one fetched ahead when there is one, else fetched now."""
        future = self.ahead.pop(skip, None)
        if future is None:
            return self.fetch(skip)
        while True:
            try:
                return future.result(timeout=0.1)
            except FutureTimeout:
                # A stop does not wait for an answer on its way: the request's thread is abandoned.
                if retry.STOP.is_set():
                    raise retry.Stopped("stop requested while a page was on its way") from None

    def plan(self, next_skip: int, total: int) -> None:
        """Keep ``fetch_concurrency`` requests going for the pages from ``next_skip`` on, below ``total``."""
        size, width = self.settings.page_size, self.settings.fetch_concurrency
        wanted = [next_skip + k * size for k in range(width) if next_skip + k * size < total] if width > 1 else []
        for skip in [s for s in self.ahead if s not in wanted]:
            self.ahead.pop(skip).cancel()  # offsets shifted by a short page: never handed on
        for skip in wanted:
            if skip not in self.ahead:
                self.ahead[skip] = self._start(skip)

    def _start(self, skip: int) -> "Future[Page]":
        """The page at ``skip`` fetched in a daemon thread once a request slot is free."""
        future: Future[Page] = Future()
        # The copied context keeps the run id on the fetchers' log lines and the run's trace.
        ctx = contextvars.copy_context()

        def work() -> None:
            while not self.slots.acquire(timeout=0.1):
                if self.closed.is_set() or future.cancelled():
                    return
            try:
                if future.set_running_or_notify_cancel():
                    future.set_result(ctx.run(self.fetch, skip))
            except BaseException as exc:  # handed to the reader of the future, as an executor does
                future.set_exception(exc)
            finally:
                self.slots.release()

        threading.Thread(target=work, name=f"fetch-{skip}", daemon=True).start()
        return future
