"""One extraction run: fetch pages, hand each on to the raw stream with the checkpoint, then announce the end."""

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
from redis.lock import Lock

from etl_common import metrics, pii, streams, tracing
from etl_common.clock import STAMP_FORMAT, utc_iso
from etl_common.errors import PermanentError, TransientError
from etl_common.files import file_names
from etl_common.keys import CHANNEL_PHASE1, Keys
from etl_common.redis_client import RETRYABLE_ERRORS
from extractor.checkpoint import Checkpoint
from extractor.pagejson import protected
from extractor.settings import ExtractorSettings
from extractor.source import Bounds, SourceFailed, fetch_page

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("extractor")

TS_FORMAT = STAMP_FORMAT


class AlreadyRunning(TransientError):
    """Another extractor holds the run lock."""


class Interrupted(TransientError):
    """A stop was asked between pages; the checkpoint keeps the place."""


class RunFailed(PermanentError):
    """An unexpected error stopped the run: it is recorded as failed with the error; a resume retries the page."""


def _new_run(client: redis.Redis, keys: Keys, trigger: str) -> Checkpoint:
    started = datetime.now(timezone.utc)
    stamp = started.replace(microsecond=0)
    # File names carry a second: never reuse the previous run's. Only the names move; started_at stays true.
    last = client.get(f"{keys.prefix}last_run_ts")
    if last:
        prev = datetime.strptime(streams.text(last), TS_FORMAT).replace(tzinfo=timezone.utc)
        stamp = max(stamp, prev + timedelta(seconds=1))
    run_ts = stamp.strftime(TS_FORMAT)
    client.set(f"{keys.prefix}last_run_ts", run_ts)
    # Run-now requests made before this moment are satisfied by this run.
    client.set(f"{keys.prefix}last_run_started", time.time())
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
    lock: Lock,
    lease_s: float,
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
        if time.monotonic() - last_extend > lease_s / 3:
            lock.extend(lease_s, replace_ttl=True)
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
    """Run (or resume) one extraction; returns the phase 1 payload. Raises SourceFailed on exhausted retries.

    ``lock_wait_s`` lets a restarted extractor wait out the lease of a predecessor that died;
    ``resume_only`` finishes an unfinished run but never starts a new one (None when there is none).
    """
    keys = Keys(settings.key_prefix)
    lock = client.lock(keys.extract_lock, timeout=settings.lock_ttl_s, blocking_timeout=lock_wait_s)
    if not lock.acquire(blocking=lock_wait_s > 0):
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
            try:
                return _pages(settings, client, keys, cp, resumed, trigger, lock, should_stop, beat)
            except (SourceFailed, Interrupted, *RETRYABLE_ERRORS):
                raise
            except Exception as exc:
                # A bug or a page of a shape nobody foresaw: the run must say so, never stay 'running' silently.
                log.exception("unexpected error; run failed")
                metrics.ERRORS.labels(stage="extract").inc()
                error = f"unexpected error at page {cp.next_page} (skip={cp.next_skip}): {type(exc).__name__}: {exc}"
                _fail(client, keys, cp, error[:2000])
                raise RunFailed(error) from exc
            finally:
                structlog.contextvars.unbind_contextvars("run_id")
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("run lock had already expired")


def _pages(
    settings: ExtractorSettings,
    client: redis.Redis,
    keys: Keys,
    cp: Checkpoint,
    resumed: bool,
    trigger: str,
    lock: Lock,
    should_stop: Callable[[], bool],
    beat: Callable[[], None],
) -> dict[str, Any]:
    names = file_names(cp.run_ts)
    pipe = client.pipeline(transaction=True)
    if resumed:
        log.info("resuming run", next_skip=cp.next_skip, page=cp.next_page)
        emit(pipe, keys, {"type": "run_resumed", "run_id": cp.run_id, "trigger": trigger}, None)
    else:
        cp.traceparent = tracing.current_traceparent() or ""
        event = {
            "type": "run_started",
            "run_id": cp.run_id,
            "run_ts": cp.run_ts,
            "trigger": cp.trigger,
            "started_at": cp.started_at,
            **names,
        }
        emit(pipe, keys, event, cp.traceparent)
        pipe.hset(keys.checkpoint, mapping=cp.mapping())
        log.info("run started", trigger=trigger)
    pipe.execute()
    run_started = time.monotonic()
    metrics.RUN_STARTED.set(time.time())
    metrics.RUN_PROGRESS.labels(stage="extract").set(cp.records)

    def alive() -> None:  # while a slow page is awaited: keep the lease and the heartbeat
        lock.extend(settings.lock_ttl_s, replace_ttl=True)
        beat()

    with httpx.Client(timeout=settings.request_timeout_s, follow_redirects=True) as http:
        while True:
            if should_stop():
                raise Interrupted("stop requested; the checkpoint keeps the run's place")
            _wait_for_backlog(
                client, keys, settings.raw_backlog_max_pages, beat, lock, settings.lock_ttl_s, should_stop
            )
            t0 = time.monotonic()
            with tracer.start_as_current_span("extract.page", attributes={"etl.page": cp.next_page}):
                try:
                    page = fetch_page(
                        http,
                        settings.source_url,
                        cp.next_skip,
                        settings.page_size,
                        settings.retry_delays,
                        settings.retry_after_max_s,
                        Bounds.of(settings),
                        alive,
                    )
                except SourceFailed as exc:
                    _fail(client, keys, cp, str(exc))
                    raise
                warning = None
                if cp.total >= 0 and page.total != cp.total:
                    warning = (
                        f"source total changed from {cp.total} to {page.total} at page {cp.next_page} "
                        f"(skip={cp.next_skip}): users added or deleted during the run may be missed or fetched twice"
                    )
                    log.warning("source total changed during the run", was=cp.total, now=page.total)
                    metrics.RUN_WARNINGS.labels(kind="source_total_changed").inc()
                cp.total = page.total
                if not page.users:
                    if warning:
                        _warn(client, keys, cp, warning)
                    break
                for reason in page.quarantined():
                    metrics.RECORDS.labels(stage="extract", outcome="unreadable").inc()
                    log.warning("record quarantined", page=cp.next_page, reason=reason)
                entry = {
                    "kind": "page",
                    "run_id": cp.run_id,
                    "run_ts": cp.run_ts,
                    "page": cp.next_page,
                    "skip": cp.next_skip,
                    "total": cp.total,
                    # Secrets never enter Redis (its append-only file keeps what a stream entry held).
                    "records": [protected(user, settings.pii_policy) for user in page.users],
                    pii.MARK: settings.pii_policy,  # the transformer need not protect these records again
                }
                cp.next_skip += len(page.users)
                cp.next_page += 1
                cp.records += len(page.users)
                # The page and the checkpoint move together: a crash can neither lose nor repeat it.
                pipe = client.pipeline(transaction=True)
                pipe.xadd(keys.raw_stream, streams.encode(entry, tracing.current_traceparent()))
                pipe.hset(keys.checkpoint, mapping=cp.mapping())
                if warning:
                    emit(pipe, keys, _warning_event(cp, warning), tracing.current_traceparent())
                pipe.execute()
            lock.extend(settings.lock_ttl_s, replace_ttl=True)
            beat()
            metrics.PAGES.labels(stage="extract", outcome="fetched").inc()
            metrics.RECORDS.labels(stage="extract", outcome="fetched").inc(len(page.users))
            metrics.PAGE_DURATION.labels(stage="extract").observe(time.monotonic() - t0)
            metrics.RUN_EXPECTED.set(cp.total)
            metrics.RUN_PROGRESS.labels(stage="extract").set(cp.records)
            log.info(
                "page handed on",
                page=cp.next_page - 1,
                records=len(page.users),
                progress=f"{cp.records}/{cp.total}",
                outcome="ok",
                duration_ms=round((time.monotonic() - t0) * 1000, 1),
            )
            if cp.next_skip >= cp.total:
                break
    return _finish(client, keys, cp, names, time.monotonic() - run_started)


def _warning_event(cp: Checkpoint, warning: str) -> dict[str, Any]:
    return {"type": "run_warning", "run_id": cp.run_id, "run_ts": cp.run_ts, "warning": warning}


def _warn(client: redis.Redis, keys: Keys, cp: Checkpoint, warning: str) -> None:
    pipe = client.pipeline(transaction=True)
    emit(pipe, keys, _warning_event(cp, warning), tracing.current_traceparent())
    pipe.execute()


def _fail(client: redis.Redis, keys: Keys, cp: Checkpoint, error: str) -> None:
    log.error("run failed; checkpoint kept for a resume", next_skip=cp.next_skip, error=error)
    metrics.RUNS.labels(stage="extract", outcome="failed").inc()
    pipe = client.pipeline(transaction=True)
    emit(pipe, keys, {"type": "extract_failed", "run_id": cp.run_id, "error": error}, tracing.current_traceparent())
    pipe.execute()


def _finish(client: redis.Redis, keys: Keys, cp: Checkpoint, names: dict[str, str], seconds: float) -> dict[str, Any]:
    phase1 = {"run_id": cp.run_id, "raw_file": names["raw_file"], "records": cp.records, "pages": cp.next_page}
    tp = tracing.current_traceparent()
    pipe = client.pipeline(transaction=True)
    # The end marker tells the transformers how many pages make the run.
    end = {"kind": "end", "run_id": cp.run_id, "run_ts": cp.run_ts, "pages": cp.next_page, "records": cp.records}
    pipe.xadd(keys.raw_stream, streams.encode(end, tp))
    if cp.records != cp.total:
        metrics.RUN_WARNINGS.labels(kind="records_differ_from_total").inc()
        warning = f"fetched {cp.records} users but the source's total says {cp.total}"
        log.warning("run fetched a different number of users than the source's total", warning=warning)
        emit(pipe, keys, _warning_event(cp, warning), tp)
    emit(pipe, keys, {"type": "phase1_complete", **phase1, "total": cp.total, "run_ts": cp.run_ts}, tp)
    pipe.publish(CHANNEL_PHASE1, orjson.dumps(phase1))
    pipe.delete(keys.checkpoint)
    pipe.execute()
    metrics.RUNS.labels(stage="extract", outcome="succeeded").inc()
    metrics.STAGE_DURATION.labels(stage="extract").observe(seconds)
    log.info("extraction complete", records=cp.records, pages=cp.next_page, seconds=round(seconds, 3))
    return phase1
