"""One extraction run: fetch pages, hand each on to the raw stream with the checkpoint, then announce the end."""

import math
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import redis
import structlog
from opentelemetry import trace
from redis.client import Pipeline

from etl_common import metrics, pii, streams, tracing
from etl_common.clock import STAMP_FORMAT, utc_iso
from etl_common.errors import PermanentError, TransientError
from etl_common.files import file_names
from etl_common.keys import CHANNEL_PHASE1, Keys
from etl_common.redis_client import RETRYABLE_ERRORS
from extractor.checkpoint import Checkpoint, SeenIds, id_ranges, user_id
from extractor.fetcher import Fetcher
from extractor.lease import Lease, LeaseLost
from extractor.pagejson import protected
from extractor.settings import ExtractorSettings
from extractor.source import SourceFailed

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("extractor")

TS_FORMAT = STAMP_FORMAT


class AlreadyRunning(TransientError):
    """Another extractor holds the run lock."""


class Interrupted(TransientError):
    """A stop was asked between pages; the checkpoint keeps the place."""


class SourceMisbehaved(PermanentError):
    """The source's answers cannot make a correct run (it repeats pages, or never ends): the run is failed for good."""


class RunFailed(PermanentError):
    """An unexpected error stopped the run: it is recorded as failed with the error; a resume retries the page."""


def _new_run(client: redis.Redis, keys: Keys, trigger: str) -> Checkpoint:
    """A new run's checkpoint; the run's start transaction stores it with ``last_run_ts`` and ``last_run_started``."""
    started = datetime.now(timezone.utc)
    stamp = started.replace(microsecond=0)
    # File names carry a second: never reuse the previous run's. Only the names move; started_at stays true.
    last = client.get(f"{keys.prefix}last_run_ts")
    if last:
        prev = datetime.strptime(streams.text(last), TS_FORMAT).replace(tzinfo=timezone.utc)
        stamp = max(stamp, prev + timedelta(seconds=1))
    run_ts = stamp.strftime(TS_FORMAT)
    return Checkpoint(
        run_id=f"{run_ts}_{secrets.token_hex(3)}",
        run_ts=run_ts,
        started_at=utc_iso(started),
        trigger=trigger,
        raw_file=file_names(run_ts)["raw_file"],
    )


def emit(pipe: Pipeline, keys: Keys, event: dict[str, Any], traceparent: str | None) -> None:
    """Add a run-lifecycle event to the events stream (trimmed to the recent past)."""
    pipe.xadd(keys.events_stream, streams.encode(event, traceparent), maxlen=100_000, approximate=True)


def _wait_for_backlog(
    client: redis.Redis,
    keys: Keys,
    limit: int,
    beat: Callable[[], None],
    lease: Lease,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Backpressure: consumed entries are deleted, so the stream lengths are the backlog.

    The processed stream counts too: when the saver is the slow stage, its backlog would otherwise grow
    with the run's size (measured: 121 MB of Redis at 100,000 users instead of a few MB).
    """
    started = last_extend = time.monotonic()
    while _backlog(client, keys) > limit:
        if should_stop():
            raise Interrupted("stop requested while waiting on backpressure; the checkpoint keeps the run's place")
        beat()
        if time.monotonic() - last_extend > lease.ttl_s / 3:
            lease.renew()
            last_extend = time.monotonic()
        time.sleep(0.02)
    waited = time.monotonic() - started
    if waited > 0:
        metrics.BACKPRESSURE_WAITS.inc(waited)


def _backlog(client: redis.Redis, keys: Keys) -> int:
    """Pages handed on and not yet transformed, plus transformed pages not yet loaded (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.raw_stream)
    pipe.xlen(keys.processed_stream)
    return sum(pipe.execute())


def extract(
    settings: ExtractorSettings,
    client: redis.Redis,
    trigger: str,
    should_stop: Callable[[], bool] = lambda: False,
    beat: Callable[[], None] = lambda: None,
    lock_wait_s: float = 0.0,
    resume_only: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) one extraction; returns the phase 1 payload. Raises SourceFailed on exhausted retries,
    SourceMisbehaved when the source cannot give a correct run, LeaseLost when another extractor took it over.

    ``lock_wait_s`` lets a restarted extractor wait out the lease of a predecessor that died;
    ``resume_only`` finishes an unfinished run but never starts a new one (None when there is none).
    """
    keys = Keys(settings.key_prefix)
    lease = Lease(client, keys, settings.lock_ttl_s, lock_wait_s)
    if not lease.acquire():
        raise AlreadyRunning("another extraction holds the lock")
    try:
        cp = Checkpoint.load(client, keys.checkpoint)
        resumed = cp is not None
        if cp is None and resume_only:
            log.info("no unfinished run to resume")
            return None
        if cp is None:
            cp = _new_run(client, keys, trigger)
        ctx = tracing.context_from(cp.traceparent) if resumed else None
        with tracer.start_as_current_span(
            "extract.run", context=ctx, attributes={"etl.run_id": cp.run_id, "etl.resumed": resumed}
        ):
            structlog.contextvars.bind_contextvars(run_id=cp.run_id)
            run = Extraction(settings, client, keys, cp, lease, should_stop, beat)
            try:
                return run.pages(resumed, trigger)
            except LeaseLost as exc:
                lease.lost(exc)
                raise
            except (SourceFailed, SourceMisbehaved, Interrupted, *RETRYABLE_ERRORS):
                raise
            except Exception as exc:
                # A bug or a page of a shape nobody foresaw: the run must say so, never stay 'running' silently.
                log.exception("unexpected error; run failed")
                metrics.ERRORS.labels(stage="extract").inc()
                error = f"unexpected error at page {cp.next_page} (skip={cp.next_skip}): {type(exc).__name__}: {exc}"
                try:
                    run.fail(error[:2000])
                except LeaseLost as lost:
                    lease.lost(lost)
                    raise
                raise RunFailed(error) from exc
            finally:
                structlog.contextvars.unbind_contextvars("run_id")
    finally:
        lease.release()


class Extraction:
    """One run's pages: each checked (duplicates, caps), handed on with the checkpoint under the lease, in order."""

    def __init__(
        self,
        settings: ExtractorSettings,
        client: redis.Redis,
        keys: Keys,
        cp: Checkpoint,
        lease: Lease,
        should_stop: Callable[[], bool],
        beat: Callable[[], None],
    ) -> None:
        self.settings, self.client, self.keys, self.cp, self.lease = settings, client, keys, cp, lease
        self.should_stop, self.beat = should_stop, beat
        self.names = file_names(cp.run_ts)
        self.seen = SeenIds()
        # Warnings of the page being checked: an abort records them too.
        self.pending: list[str] = []

    def pages(self, resumed: bool, trigger: str) -> dict[str, Any]:
        """Fetch and hand on every page of the run, then announce its end; the phase 1 payload."""
        cp, keys = self.cp, self.keys
        if resumed:
            log.info("resuming run", next_skip=cp.next_skip, page=cp.next_page)
            self.seen = SeenIds.load(self.client, keys.checkpoint_ids)
            event = {"type": "run_resumed", "run_id": cp.run_id, "trigger": trigger}
            self.lease.write(lambda pipe: emit(pipe, keys, event, None), cp.run_id)
        else:
            cp.traceparent = tracing.current_traceparent() or ""
            event = {
                "type": "run_started",
                "run_id": cp.run_id,
                "run_ts": cp.run_ts,
                "trigger": cp.trigger,
                "started_at": cp.started_at,
                **self.names,
            }

            def start(pipe: Pipeline) -> None:
                emit(pipe, keys, event, cp.traceparent)
                pipe.delete(keys.checkpoint_ids)
                pipe.hset(keys.checkpoint, mapping=cp.mapping())
                pipe.set(f"{keys.prefix}last_run_ts", cp.run_ts)
                # Run-now requests made before this moment are satisfied by this run.
                pipe.set(f"{keys.prefix}last_run_started", time.time())

            self.lease.write(start, None)
            log.info("run started", trigger=trigger)
        run_started = time.monotonic()
        metrics.RUN_STARTED.set(time.time())
        metrics.RUN_PROGRESS.labels(stage="extract").set(cp.records)
        settings = self.settings
        with (
            httpx.Client(timeout=settings.request_timeout_s, follow_redirects=True, limits=_limits(settings)) as http,
            Fetcher(settings, http, self._alive) as fetcher,
        ):
            while True:
                if self.should_stop():
                    raise Interrupted("stop requested; the checkpoint keeps the run's place")
                _wait_for_backlog(
                    self.client,
                    keys,
                    settings.raw_backlog_max_pages,
                    self.beat,
                    self.lease,
                    self.should_stop,
                )
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
        cp, keys, settings = self.cp, self.keys, self.settings
        warnings = self.pending = self._note_total(total)
        if not users:
            if warnings:
                self.lease.write(lambda pipe: self._emit_warnings(pipe, warnings), cp.run_id)
            return True
        duplicates, page_ids = self._split(users)
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

        # The page, the checkpoint and the ids move together: a crash can neither lose nor repeat them.
        def hand(pipe: Pipeline) -> None:
            pipe.xadd(keys.raw_stream, streams.encode(entry, tracing.current_traceparent()))
            pipe.hset(keys.checkpoint, mapping=cp.mapping())
            if page_ids:
                pipe.append(keys.checkpoint_ids, SeenIds.line(page_ids))
            self._emit_warnings(pipe, warnings)

        self.lease.write(hand, cp.run_id)
        self.seen.update(page_ids)
        self.lease.renew()
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

    def _split(self, users: list[Any]) -> tuple[list[int | str], list[int | str]]:
        """The ids of ``users`` seen before in this run (this page included), and the new ones."""
        duplicates: list[int | str] = []
        page_ids: list[int | str] = []
        in_page: set[int | str] = set()
        for user in users:
            uid = user_id(user)
            if uid is None:
                continue  # nothing to tell it by
            if uid in self.seen or uid in in_page:
                duplicates.append(uid)
            else:
                in_page.add(uid)
                page_ids.append(uid)
        return duplicates, page_ids

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

    def _emit_warnings(self, pipe: Pipeline, warnings: list[str]) -> None:
        for warning in warnings:
            emit(pipe, self.keys, _warning_event(self.cp, warning), tracing.current_traceparent())

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
        cp = self.cp
        log.error("run failed; checkpoint kept for a resume", next_skip=cp.next_skip, error=error)
        metrics.RUNS.labels(stage="extract", outcome="failed").inc()
        event = {"type": "extract_failed", "run_id": cp.run_id, "error": error}
        self.lease.write(lambda pipe: emit(pipe, self.keys, event, tracing.current_traceparent()), cp.run_id)

    def abort(self, reason: str, error: str) -> None:
        """Fail the run for good with ``error`` (a resume would meet the same source): the checkpoint goes."""
        cp, keys = self.cp, self.keys
        log.error("run failed for good: the source cannot give a correct run", reason=reason, error=error)
        metrics.RUN_ABORTED.labels(reason=reason).inc()
        metrics.RUNS.labels(stage="extract", outcome="failed").inc()
        warnings = self.pending + self._end_warnings()

        def end(pipe: Pipeline) -> None:
            self._emit_warnings(pipe, warnings)
            emit(pipe, keys, {"type": "run_failed", "run_id": cp.run_id, "error": error}, tracing.current_traceparent())
            pipe.delete(keys.checkpoint, keys.checkpoint_ids)

        self.lease.write(end, cp.run_id)
        raise SourceMisbehaved(error)

    def _finish(self, seconds: float) -> dict[str, Any]:
        cp, keys = self.cp, self.keys
        phase1 = {"run_id": cp.run_id, "raw_file": self.names["raw_file"], "records": cp.records, "pages": cp.next_page}
        tp = tracing.current_traceparent()
        warnings = self._end_warnings()
        if cp.records != cp.total:
            metrics.RUN_WARNINGS.labels(kind="records_differ_from_total").inc()
            warning = f"fetched {cp.records} users but the source's total says {cp.total}"
            log.warning("run fetched a different number of users than the source's total", warning=warning)
            warnings.append(warning)

        def end(pipe: Pipeline) -> None:
            # The end marker tells the transformers how many pages make the run.
            marker = {"kind": "end", "run_id": cp.run_id, "run_ts": cp.run_ts, "pages": cp.next_page}
            pipe.xadd(keys.raw_stream, streams.encode({**marker, "records": cp.records}, tp))
            self._emit_warnings(pipe, warnings)
            emit(pipe, keys, {"type": "phase1_complete", **phase1, "total": cp.total, "run_ts": cp.run_ts}, tp)
            pipe.publish(CHANNEL_PHASE1, orjson.dumps(phase1))
            pipe.delete(keys.checkpoint, keys.checkpoint_ids)

        self.lease.write(end, cp.run_id)
        metrics.RUNS.labels(stage="extract", outcome="succeeded").inc()
        metrics.STAGE_DURATION.labels(stage="extract").observe(seconds)
        log.info("extraction complete", records=cp.records, pages=cp.next_page, seconds=round(seconds, 3))
        return phase1


def _limits(settings: ExtractorSettings) -> httpx.Limits:
    """Connections for every concurrent fetcher (httpx keeps 20 at most by default)."""
    return httpx.Limits(max_connections=max(settings.fetch_concurrency, 1) + 1)


def _warning_event(cp: Checkpoint, warning: str) -> dict[str, Any]:
    return {"type": "run_warning", "run_id": cp.run_id, "run_ts": cp.run_ts, "warning": warning}
