"""The run watchdog: fails a run in flight that makes no progress, or whose announced pages Redis lost, saying why.

It runs in the saver (the writer of ``etl_runs``) on turns where the saver has caught up with its streams, so a
saver that was down first loads what waited for it and only then judges the runs: a run's last progress is its
``updated_at`` (a page loaded, an event, a status change). A run is failed with a compare-and-set on that
``updated_at``, so progress made meanwhile, or another replica's verdict, wins. A failed run is not final for good:
an extractor that resumes it (``run_resumed``) or completes it (``phase1_complete``) brings it back, and so does
a page of it loaded after a verdict of no progress (a stage that came back).

Pages lost in transit (Redis restarted without persistence) are not fetched again: the source may have changed
since, and one run must be one snapshot. The run fails with the pages and the next step (a new run).
"""

import sqlite3
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import orjson
import redis
import structlog

from etl_common import metrics, streams
from etl_common.keys import Keys
from etl_common.runs import RunStatus
from saver.settings import SaverSettings
from saver.store import STALLED, Store

log = structlog.get_logger(__name__)

_SCAN_BATCH = 1000


def _age_s(iso: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(iso.replace("Z", "+00:00"))).total_seconds()


class Watchdog:
    """Looks at the runs in flight every ``watchdog_interval_s``; see the module's docstring."""

    def __init__(self, settings: SaverSettings, client: redis.Redis, keys: Keys, store: Store) -> None:
        self.settings, self.client, self.keys, self.store = settings, client, keys, store
        self.next_at = 0.0  # at start-up the first idle turn looks at once: the saver may be the one that died
        # run_id -> (loaded pages) of runs that had pages missing and none in Redis at the previous look
        self.suspects: dict[str, int] = {}

    def due(self) -> bool:
        """True when the next look is due."""
        return time.monotonic() >= self.next_at

    def check(self) -> list[str]:
        """Fail the runs that stalled or lost pages; returns their ids."""
        self.next_at = time.monotonic() + self.settings.watchdog_interval_s
        runs = self.store.in_flight()
        if not runs:
            self.suspects.clear()
            return []
        raw = self._entries_by_run(self.keys.raw_stream)
        processed = self._entries_by_run(self.keys.processed_stream)
        now = datetime.now(timezone.utc)
        failed, suspects = [], {}
        for run in runs:
            run_id, loaded = run["run_id"], run["loaded_pages"]
            in_redis = raw[run_id] + processed[run_id]
            expected = run["pages_expected"]
            reason, kind = None, "stalled"
            if (
                run["status"] in (RunStatus.EXTRACTED, RunStatus.TRANSFORMED)
                and expected
                and loaded < expected
                and not in_redis
            ):
                if self.suspects.get(run_id) == loaded:
                    reason, kind = self._lost(run, expected, loaded), "pages_lost"
                else:
                    suspects[run_id] = loaded  # confirmed (or not) by the next look
            # Pages of the run waiting for the saver (a dead saver's pending ones are claimed after
            # ETL_CLAIM_IDLE_MS): the saver itself is the next progress, so the run is not judged yet.
            waiting_for_us = processed[run_id] > 0
            if (
                reason is None
                and not waiting_for_us
                and _age_s(run["updated_at"], now) > self.settings.run_stall_timeout_s
            ):
                reason = self._stalled(run, raw[run_id])
            if reason and self.store.fail_unless_progressed(run_id, run["status"], run["updated_at"], reason):
                metrics.RUNS_STALLED.labels(reason=kind).inc()
                metrics.RUNS.labels(stage="save", outcome="failed").inc()
                log.error("watchdog failed the run", run_id=run_id, reason=kind, error=reason)
                failed.append(run_id)
        self.suspects = suspects
        return failed

    def _entries_by_run(self, stream: str) -> Counter[str]:
        """Run id -> entries of that run in ``stream`` (pending ones included: they stay until acked)."""
        counts: Counter[str] = Counter()
        start = "-"
        while True:
            batch: Any = self.client.xrange(stream, min=start, count=_SCAN_BATCH)
            for _, fields in batch or []:
                try:
                    payload = orjson.loads((fields or {}).get(b"data", b"{}"))
                except orjson.JSONDecodeError:
                    continue
                if isinstance(payload, dict) and payload.get("kind") != "end":
                    counts[str(payload.get("run_id", ""))] += 1
            if not batch or len(batch) < _SCAN_BATCH:
                return counts
            start = "(" + streams.text(batch[-1][0])

    def _lost(self, run: sqlite3.Row, expected: int, loaded: int) -> str:
        missing = self.store.missing_pages(run["run_id"], expected)
        shown = ", ".join(str(p) for p in missing[:20]) + (", ..." if len(missing) > 20 else "")
        return (
            f"watchdog: pages lost in transit: {expected - loaded} of the {expected} pages the extractor announced "
            f"never reached the database (pages {shown}) and Redis holds none of them (Redis restarted without "
            f"persistence? run it with appendonly yes and noeviction). The run cannot complete: start a new run "
            f"(POST /etl_runs or `python -m extractor once`)"
        )

    def _stalled(self, run: sqlite3.Row, raw: int) -> str:
        status, since = run["status"], run["updated_at"]
        timeout = f"{self.settings.run_stall_timeout_s:g} s (ETL_RUN_STALL_TIMEOUT_S)"
        head = f"{STALLED} for over {timeout} since {since} (status {status})"
        if raw:
            return (
                f"{head}: stalled at the transformer: {raw} pages of the run wait in {self.keys.raw_stream}; is a "
                "transformer running? look at its logs and /healthz"
            )
        if status == RunStatus.LOADED:
            return f"{head}: stalled at the saver writing or uploading the run's files; look at the saver's logs"
        if status == RunStatus.RUNNING:
            held = self.client.exists(self.keys.extract_lock)
            who = (
                "an extractor holds the run's lock but hands on no page (a source that hangs or trickles?); look at "
                "the extractor's logs"
                if held
                else "no extractor holds the run's lock (it died or was stopped); start one: it resumes the run "
                "from its checkpoint, or start a new run"
            )
            return f"{head}: stalled at the extractor: {who}"
        return (
            f"{head}: stalled after the extraction: no page of the run is in Redis and the end of phase 2 never came; "
            "look at the transformer's logs, then start a new run"
        )
