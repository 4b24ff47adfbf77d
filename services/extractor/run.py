"""The two ways into an extraction run: ``extract`` (start one, or finish the unfinished one) and ``resume``."""

from collections.abc import Callable
from typing import Any

import redis
import structlog
from opentelemetry import trace

from etl_common import metrics, streams, tracing
from etl_common.errors import EtlError, RunAborted, RunInterrupted
from etl_common.keys import Keys
from etl_common.redis_client import RETRYABLE_ERRORS
from extractor.checkpoint import Checkpoint, SeenIds
from extractor.errors import (
    AlreadyRunning,
    CheckpointUnreadable,
    Interrupted,
    RunEndedMeanwhile,
    RunFailed,
    SourceMisbehaved,
)
from extractor.lease import ANY_RUN, Command, Lease, LeaseLost
from extractor.lifecycle import EVENTS_MAXLEN, Run, new_checkpoint, xadd
from extractor.pages import Extraction
from extractor.settings import ExtractorSettings

__all__ = ["AlreadyRunning", "Interrupted", "RunFailed", "SourceMisbehaved", "extract", "resume"]

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("extractor")

# Decides, under the lease, the run to go on with: the unfinished one (its checkpoint), else a new one or none.
_Choose = Callable[[redis.Redis, Keys, Checkpoint | None], Checkpoint | None]


def extract(
    settings: ExtractorSettings,
    client: redis.Redis,
    trigger: str,
    should_stop: Callable[[], bool] = lambda: False,
    beat: Callable[[], None] = lambda: None,
    lock_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Run one extraction, or finish the unfinished one first (it is the run in progress); the phase 1 payload.

    Raises a branch of etl_common.errors: AlreadyRunning (another extractor holds the lock; RunEndedMeanwhile when
    its run ended while this one waited), RunInterrupted (SourceFailed, Interrupted, LeaseLost, RunFailed: the
    checkpoint keeps the place) or RunAborted (SourceMisbehaved, CheckpointUnreadable: failed for good).
    ``lock_wait_s`` waits out the lease of a predecessor that died.
    """

    def choose(client: redis.Redis, keys: Keys, cp: Checkpoint | None) -> Checkpoint:
        return cp if cp is not None else new_checkpoint(client, keys, trigger)

    phase1 = _go(settings, client, trigger, choose, should_stop, beat, lock_wait_s)
    assert phase1 is not None  # a new run is always chosen when none is unfinished
    return phase1


def resume(
    settings: ExtractorSettings,
    client: redis.Redis,
    should_stop: Callable[[], bool] = lambda: False,
    beat: Callable[[], None] = lambda: None,
    lock_wait_s: float = 0.0,
) -> dict[str, Any] | None:
    """Finish the unfinished run from its checkpoint; None when there is none (no new run starts). Raises as extract."""

    def choose(client: redis.Redis, keys: Keys, cp: Checkpoint | None) -> Checkpoint | None:
        if cp is None:
            log.info("no unfinished run to resume")
        return cp

    return _go(settings, client, "resume", choose, should_stop, beat, lock_wait_s)


def _go(
    settings: ExtractorSettings,
    client: redis.Redis,
    trigger: str,
    choose: _Choose,
    should_stop: Callable[[], bool],
    beat: Callable[[], None],
    lock_wait_s: float,
) -> dict[str, Any] | None:
    """Under the lease: the run ``choose`` picks, started or resumed, its pages, its end; the phase 1 payload."""
    keys = Keys(settings.key_prefix)
    lease = Lease(client, keys, settings.lock_ttl_s, lock_wait_s)
    if not lease.acquire(should_stop, beat):
        raise AlreadyRunning("another extraction holds the lock")
    try:
        # Read only under the lease: a predecessor's last write is then either in it or refused.
        try:
            unfinished = Checkpoint.load(client, keys.checkpoint)
        except CheckpointUnreadable as exc:
            _discard(lease, keys, exc)
            raise
        if lease.waited and unfinished is None:
            # The extractor that held the lock ended its run while this one waited: that run was this request's.
            raise RunEndedMeanwhile(_last_outcome(client, keys))
        cp = choose(client, keys, unfinished)
        if cp is None:
            return None
        ctx = tracing.context_from(cp.traceparent) if unfinished else None
        with tracer.start_as_current_span(
            "extract.run", context=ctx, attributes={"etl.run_id": cp.run_id, "etl.resumed": bool(unfinished)}
        ):
            structlog.contextvars.bind_contextvars(run_id=cp.run_id)
            try:
                return _pages(
                    settings,
                    client,
                    Run(keys, lease, cp, settings.run_claim_ttl_s),
                    unfinished is not None,
                    trigger,
                    should_stop,
                    beat,
                )
            finally:
                structlog.contextvars.unbind_contextvars("run_id")
    finally:
        lease.release()


def _pages(
    settings: ExtractorSettings,
    client: redis.Redis,
    run: Run,
    resumed: bool,
    trigger: str,
    should_stop: Callable[[], bool],
    beat: Callable[[], None],
) -> dict[str, Any]:
    """Start or resume ``run``, then its pages; an error nobody foresaw fails it with its reason (RunFailed)."""
    cp = run.cp
    extraction = Extraction(settings, client, run, should_stop, beat)
    try:
        if resumed:
            log.info("resuming run", next_skip=cp.next_skip, page=cp.next_page)
            extraction.seen = SeenIds.load(client, run.keys.checkpoint_ids)
            run.resume(trigger)
        else:
            run.start()
            log.info("run started", trigger=trigger)
        return extraction.pages()
    except LeaseLost as exc:
        run.lease.lost(exc)
        raise
    except CheckpointUnreadable as exc:  # the run's ids cannot be read: it cannot go on without repeating users
        log.error("run checkpoint unreadable; run failed for good", key=exc.key, error=str(exc))
        metrics.RUNS.labels(stage="extract", outcome="failed").inc()
        run.abort(str(exc), [])
        raise
    except (RunInterrupted, RunAborted, *RETRYABLE_ERRORS):
        raise  # the error already says how the run ends (SourceFailed recorded it; Interrupted needs no record)
    except Exception as exc:
        # A bug or a page of a shape nobody foresaw: the run must say so, never stay 'running' silently.
        log.exception("unexpected error; run failed")
        metrics.ERRORS.labels(stage="extract").inc()
        error = f"unexpected error at page {cp.next_page} (skip={cp.next_skip}): {type(exc).__name__}: {exc}"
        try:
            extraction.fail(error[:2000])
        except LeaseLost as lost:
            run.lease.lost(lost)
            raise
        raise RunFailed(error) from exc


def _discard(lease: Lease, keys: Keys, exc: CheckpointUnreadable) -> None:
    """Fail the run of an unreadable checkpoint for good (when it names one) and delete the checkpoint."""
    log.error("run checkpoint unreadable; its run is failed for good", key=exc.key, error=str(exc))
    metrics.RUNS.labels(stage="extract", outcome="failed").inc()
    commands: list[Command] = [["DEL", keys.checkpoint, keys.checkpoint_ids]]
    if exc.run_id:
        event = {"type": "run_failed", "run_id": exc.run_id, "error": str(exc)[:2000]}
        commands.insert(0, xadd(keys.events_stream, streams.encode(event), EVENTS_MAXLEN))
    lease.write(commands, ANY_RUN)


def _last_outcome(client: redis.Redis, keys: Keys) -> str:
    """How the latest run ended, from the events stream (its last end event), as one sentence."""
    ended = "a run was already in progress under another extractor and ended while this one waited for the lock"
    latest: Any = client.xrevrange(keys.events_stream, count=1000)
    for _, fields in latest:
        try:
            event, _ = streams.decode(fields)
        except EtlError:
            continue
        run_id, kind = event.get("run_id"), event.get("type")
        if kind == "phase1_complete":
            return f"{ended}: run {run_id} extracted {event.get('records')} users; no second run started"
        if kind == "run_failed":
            return f"{ended}: run {run_id} failed: {event.get('error')}; no second run started (run again for one)"
    return "a run was already in progress under another extractor and left none unfinished; no second run started"
