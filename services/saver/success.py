"""A run's success told and measured: the phase 3 event and channel message, the metrics, restored after a restart."""

import time
from datetime import datetime

import orjson
import redis
import structlog

from etl_common import metrics, runs, tracing
from etl_common.keys import CHANNEL_PHASE3, Keys
from etl_common.runs import RunStatus
from saver.store import Store

log = structlog.get_logger(__name__)


def announce(client: redis.Redis, keys: Keys, store: Store, run_id: str) -> None:
    """Publish phase 3 (the channel and the events stream, in one transaction), then count and log the success."""
    run = store.run(run_id)
    files = [f["name"] for f in store.files(run_id)]
    event = runs.phase3_complete(run_id, files)
    pipe = client.pipeline(transaction=True)
    pipe.publish(CHANNEL_PHASE3, orjson.dumps({k: v for k, v in event.as_dict().items() if k != "type"}))
    runs.emit(pipe, keys.events_stream, event, tracing.current_traceparent())
    pipe.execute()
    metrics.RUNS.labels(stage="save", outcome="succeeded").inc()
    metrics.RECORDS.labels(stage="upload", outcome="uploaded").inc(run["valid_count"] if run else 0)
    metrics.LAST_SUCCESS.set(time.time())
    if run is not None and run["started_at"] and run["finished_at"]:
        seconds = (parse_iso(run["finished_at"]) - parse_iso(run["started_at"])).total_seconds()
        metrics.LAST_RUN_DURATION.set(seconds)
        metrics.STAGE_DURATION.labels(stage="run").observe(seconds)
    log.info(
        "run succeeded",
        run_id=run_id,
        valid=run["valid_count"] if run else None,
        invalid=run["invalid_count"] if run else None,
        files=files,
    )


def restore(store: Store) -> None:
    """The last success survives a restart, so 'no successful run in 26 h' does not fire on one."""
    row = store.conn.execute(
        f"SELECT started_at, finished_at FROM etl_runs WHERE status='{RunStatus.SUCCEEDED}' "
        "AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1"
    ).fetchone()
    if row and row[0]:
        finished, started = parse_iso(row[1]), parse_iso(row[0])
        metrics.LAST_SUCCESS.set(finished.timestamp())
        metrics.LAST_RUN_DURATION.set((finished - started).total_seconds())
    ratio = store.latest_invalid_ratio()
    if ratio is not None:
        metrics.LAST_RUN_INVALID_RATIO.set(ratio)


def parse_iso(value: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset (fromisoformat of Python 3.10 does not take ``Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
