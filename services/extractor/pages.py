"""A run's pages: fetched in order, each checked (duplicates, caps, the source's total) and handed on to the run."""

import functools
import math
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis
import structlog
from opentelemetry import trace

from etl_common import metrics, pii
from etl_common.keys import Keys
from extractor.checkpoint import SeenIds, id_ranges
from extractor.errors import Interrupted, SourceMisbehaved
from extractor.fetcher import Fetcher
from extractor.lifecycle import Run
from extractor.pagejson import protected
from extractor.settings import ExtractorSettings
from extractor.source import SourceFailed

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("extractor")


def backlog(client: redis.Redis, keys: Keys) -> int:
    """Pages handed on and not yet transformed, plus transformed pages not yet loaded (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.raw_stream)
    pipe.xlen(keys.processed_stream)
    return sum(pipe.execute())


class Extraction:
    """One run's pages: each checked (duplicates, caps), handed on with the checkpoint under the lease, in order."""

    def __init__(
        self,
        settings: ExtractorSettings,
        client: redis.Redis,
        run: Run,
        should_stop: Callable[[], bool],
        beat: Callable[[], None],
    ) -> None:
        self.settings, self.client, self.run, self.cp = settings, client, run, run.cp
        self.keys, self.lease = run.keys, run.lease
        self.should_stop, self.beat = should_stop, beat
        self.seen = SeenIds()
        # Warnings of the page being checked: an abort records them too.
        self.pending: list[str] = []
        # The backlog the last hand-on left (None: not known yet, asked before the next page).
        self.backlog: int | None = None

    def pages(self) -> dict[str, Any]:
        """Fetch and hand on every page of the run, then announce its end; the phase 1 payload."""
        cp, settings = self.cp, self.settings
        run_started = time.monotonic()
        metrics.RUN_STARTED.set(time.time())
        metrics.RUN_PROGRESS.labels(stage="extract").set(cp.records)
        with (
            httpx.Client(
                timeout=settings.request_timeout_s,
                follow_redirects=True,
                limits=_limits(settings),
                verify=_tls_context(),
            ) as http,
            Fetcher(settings, http, self._alive) as fetcher,
        ):
            while True:
                if self.should_stop():
                    raise Interrupted("stop requested; the checkpoint keeps the run's place")
                self._wait_for_backlog()
                self._check_pages_cap()
                t0 = time.monotonic()
                with tracer.start_as_current_span("extract.page", attributes={"etl.page": cp.next_page}):
                    if cp.total >= 0:
                        fetcher.plan(cp.next_skip, cp.total)
                    try:
                        page = fetcher.get(cp.next_skip)
                    except SourceFailed as exc:
                        self.fail(str(exc))
                        raise
                    if self.hand_on(page.users, page.total, t0, page.quarantined()):
                        break
        return self._finish(time.monotonic() - run_started)

    def _alive(self) -> None:
        """While a page is awaited (in a fetcher's thread): keep the run's lease and the heartbeat fresh."""
        self.lease.renew()
        self.beat()

    def _wait_for_backlog(self) -> None:
        """Backpressure: consumed entries are deleted, so the stream lengths are the backlog.

        The processed stream counts too: when the saver is the slow stage, its backlog would otherwise grow
        with the run's size (measured: 121 MB of Redis at 100,000 users instead of a few MB). The length the
        last hand-on read is used first: only this extractor adds to the streams, so it can only have shrunk.
        """
        limit = self.settings.raw_backlog_max_pages
        if self.backlog is not None and self.backlog <= limit:
            return
        started = last_extend = time.monotonic()
        while backlog(self.client, self.keys) > limit:
            if self.should_stop():
                raise Interrupted("stop requested while waiting on backpressure; the checkpoint keeps the run's place")
            self.beat()
            if time.monotonic() - last_extend > self.lease.ttl_s / 3:
                self.lease.renew()
                last_extend = time.monotonic()
            time.sleep(0.02)
        waited = time.monotonic() - started
        if waited > 0:
            metrics.BACKPRESSURE_WAITS.inc(waited)

    def _caps(self) -> tuple[int, int]:
        """The most records and pages this run may fetch, from the total the source announced first."""
        first, size = self.cp.first_total, self.settings.page_size
        records = math.ceil(first * self.settings.run_max_records_factor) + size
        pages = math.ceil(math.ceil(first / size) * self.settings.run_max_pages_factor) + 1
        return records, pages

    def _check_pages_cap(self) -> None:
        cp = self.cp
        if cp.first_total < 0:
            return
        _, pages_cap = self._caps()
        if cp.next_page >= pages_cap:
            self.abort(
                "pages_cap",
                f"the run reached {cp.next_page} pages ({cp.fetched} users fetched) and the source still has more: "
                f"past the cap of {pages_cap} pages, ETL_RUN_MAX_PAGES_FACTOR={self.settings.run_max_pages_factor:g} "
                f"x the pages of the total first announced ({cp.first_total} users, now {cp.total}); the source's "
                "total runs ahead or its pages are short; check the source, or raise the factor if this is real",
            )

    def hand_on(self, users: list[Any], total: int, t0: float, quarantined: list[str]) -> bool:
        """Check a fetched page and hand it on with the checkpoint; True when it was the run's last page."""
        cp, settings = self.cp, self.settings
        warnings = self.pending = self._note_total(total)
        if not users:
            self.run.warn(warnings)
            return True
        duplicates, page_ids = self.seen.split(users)
        if len(duplicates) == len(users):
            self.abort(
                "repeats",
                f"the source ignores skip (or does not advance): the page at skip={cp.next_skip} (page "
                f"{cp.next_page}) repeats ids {id_ranges(duplicates)}, all fetched earlier in this run, so the run "
                "cannot be complete; check that ETL_SOURCE_URL pages with limit and skip as DummyJSON does",
            )
        records_cap, _ = self._caps()
        if cp.fetched + len(users) > records_cap:
            self.abort(
                "records_cap",
                f"the source has given {cp.fetched + len(users)} users by page {cp.next_page} (skip={cp.next_skip}): "
                f"past the cap of {records_cap}, ETL_RUN_MAX_RECORDS_FACTOR={settings.run_max_records_factor:g} x "
                f"the total first announced ({cp.first_total}, now {cp.total}) plus one page; its total runs ahead "
                "or its list grows while the run reads it, so the run would not end; check the source, or raise the "
                "factor if such growth is real",
            )
        for reason in quarantined:
            metrics.RECORDS.labels(stage="extract", outcome="unreadable").inc()
            log.warning("record quarantined", page=cp.next_page, reason=reason)
        if duplicates:
            self._note_duplicates(duplicates)
        entry = {
            "kind": "page",
            "run_id": cp.run_id,
            "run_ts": cp.run_ts,
            "page": cp.next_page,
            "skip": cp.next_skip,
            "total": cp.total,
            # Secrets never enter Redis (its append-only file keeps what a stream entry held).
            "records": [protected(user, settings.pii_policy) for user in users],
            pii.MARK: settings.pii_policy,  # the transformer need not protect these records again
        }
        cp.next_skip += len(users)
        cp.next_page += 1
        cp.records += len(users)
        cp.fetched += len(users)
        self.backlog = self.run.hand_on(entry, page_ids, warnings)
        self.seen.update(page_ids)
        self.beat()
        metrics.PAGES.labels(stage="extract", outcome="fetched").inc()
        metrics.RECORDS.labels(stage="extract", outcome="fetched").inc(len(users))
        metrics.PAGE_DURATION.labels(stage="extract").observe(time.monotonic() - t0)
        metrics.RUN_EXPECTED.set(cp.total)
        metrics.RUN_PROGRESS.labels(stage="extract").set(cp.records)
        log.info(
            "page handed on",
            page=cp.next_page - 1,
            records=len(users),
            progress=f"{cp.records}/{cp.total}",
            outcome="ok",
            duration_ms=round((time.monotonic() - t0) * 1000, 1),
        )
        return cp.next_skip >= cp.total

    def _note_duplicates(self, duplicates: list[int | str]) -> None:
        """Count ids fetched again and remember the first 20 pages they came on (the run's end warns of them)."""
        cp = self.cp
        metrics.RUN_DUPLICATE_IDS.inc(len(duplicates))
        log.warning(
            "user ids fetched again in this run",
            page=cp.next_page,
            skip=cp.next_skip,
            ids=id_ranges(duplicates),
            count=len(duplicates),
        )
        cp.duplicate_ids += len(duplicates)
        listed = [p for p in cp.duplicate_pages.split(",") if p]
        if len(listed) < 20:
            cp.duplicate_pages = ",".join([*listed, str(cp.next_page)])

    def _note_total(self, total: int) -> list[str]:
        """Record the source's total; a change during the run is a warning once (the caps keep the first)."""
        cp, warnings = self.cp, []
        if cp.first_total < 0:
            cp.first_total = total
        elif total != cp.total and not cp.total_change_warned:
            cp.total_change_warned = 1
            warnings.append(
                f"source total changed from {cp.total} to {total} at page {cp.next_page} (skip={cp.next_skip}): "
                "users added or deleted during the run may be missed or fetched twice"
            )
            log.warning("source total changed during the run", was=cp.total, now=total)
            metrics.RUN_WARNINGS.labels(kind="source_total_changed").inc()
        cp.total = total
        return warnings

    def _end_warnings(self) -> list[str]:
        """The warnings about the whole run: user ids that came more than once."""
        cp, warnings = self.cp, []
        if cp.duplicate_ids:
            metrics.RUN_WARNINGS.labels(kind="duplicate_ids").inc()
            more = " and later ones" if len(cp.duplicate_pages.split(",")) >= 20 else ""
            warnings.append(
                f"the source's pages overlap: {cp.duplicate_ids} user ids already fetched in this run came again on "
                f"pages {cp.duplicate_pages.replace(',', ', ')}{more}; they are loaded as sent, so those users have "
                "more than one row in this run, and users may be missing where pages shifted"
            )
        return warnings

    def fail(self, error: str) -> None:
        """Record the run as failed with ``error``; the checkpoint stays, so a resume retries the page."""
        log.error("run failed; checkpoint kept for a resume", next_skip=self.cp.next_skip, error=error)
        metrics.RUNS.labels(stage="extract", outcome="failed").inc()
        self.run.fail(error)

    def abort(self, reason: str, error: str) -> None:
        """Fail the run for good with ``error`` (a resume would meet the same source): the checkpoint goes."""
        log.error("run failed for good: the source cannot give a correct run", reason=reason, error=error)
        metrics.RUN_ABORTED.labels(reason=reason).inc()
        metrics.RUNS.labels(stage="extract", outcome="failed").inc()
        self.run.abort(error, self.pending + self._end_warnings())
        raise SourceMisbehaved(error)

    def _finish(self, seconds: float) -> dict[str, Any]:
        cp = self.cp
        warnings = self._end_warnings()
        if cp.records != cp.total:
            metrics.RUN_WARNINGS.labels(kind="records_differ_from_total").inc()
            warning = f"fetched {cp.records} users but the source's total says {cp.total}"
            log.warning("run fetched a different number of users than the source's total", warning=warning)
            warnings.append(warning)
        phase1 = self.run.finish(warnings)
        metrics.RUNS.labels(stage="extract", outcome="succeeded").inc()
        metrics.STAGE_DURATION.labels(stage="extract").observe(seconds)
        log.info("extraction complete", records=cp.records, pages=cp.next_page, seconds=round(seconds, 3))
        return phase1


def _limits(settings: ExtractorSettings) -> httpx.Limits:
    """Connections for every concurrent fetcher (httpx keeps 20 at most by default)."""
    return httpx.Limits(max_connections=max(settings.fetch_concurrency, 1) + 1)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), made once per process:
    loading the bundle costs 25-90 ms of CPU, which a context per run's client paid again every run."""
    return httpx.create_ssl_context()


def warm_up() -> None:
    """Pay the source client's one-time costs at start-up rather than in the first run: the TLS context, and the
    transport httpx imports on its first client (httpcore: ~0.25 s of CPU, 12 us per user of a 20,000-user run)."""
    httpx.HTTPTransport(verify=_tls_context()).close()
