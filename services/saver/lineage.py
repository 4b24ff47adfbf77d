"""OpenLineage run events (START, COMPLETE, FAIL) of the runs, sent by a background thread when configured.

Nothing is built or sent unless the official client is configured: ``OPENLINEAGE_URL``, a file
named by ``OPENLINEAGE_CONFIG``, or ``OPENLINEAGE__TRANSPORT__*`` variables (its standard ways).
Events are built on the saver's loop from the database (cheap reads) and queued; one daemon thread
sends them through ``openlineage-python``, whose HTTP transport has a timeout. A queue that is full
drops the event with a log line: a lineage server that is down never slows or fails a run.
"""

import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from etl_common import metrics
from etl_common.runs import RunStatus
from saver.settings import SaverSettings

if TYPE_CHECKING:  # imported when lineage is on: the client and its dependencies cost the saver ~20 MB
    from openlineage.client import OpenLineageClient

log = structlog.get_logger(__name__)

PRODUCER = "https://github.com/etl-users/etl-users/tree/main/services/saver"
QUEUE_EVENTS = 1000  # events waiting for the sender; more are dropped (a lineage server down for a long time)
# run status -> event type
_STATES = {RunStatus.RUNNING: "START", RunStatus.SUCCEEDED: "COMPLETE", RunStatus.FAILED: "FAIL"}


def configured() -> bool:
    """Whether the official client's configuration is present (and OpenLineage is not disabled)."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    return bool(os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE_CONFIG")) or any(
        k.startswith("OPENLINEAGE__TRANSPORT") for k in os.environ
    )


class Lineage:
    """Emits each run's events once per saver process; ``emit`` never blocks on the network."""

    def __init__(self, settings: SaverSettings) -> None:
        self.settings = settings
        self.client: OpenLineageClient | None = None
        self.sent: set[tuple[str, str]] = set()
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_EVENTS)
        self.build: Callable[..., Any] | None = None
        if not configured():
            return
        try:
            from openlineage.client import OpenLineageClient as Client
            from openlineage.client.event_v2 import set_producer

            from saver import lineage_events

            set_producer(PRODUCER)
            self.build = lineage_events.build
            self.client = Client()
        except Exception as exc:  # a broken client configuration costs the lineage, never the saver
            log.error("OpenLineage client not configured; no lineage events", error=f"{type(exc).__name__}: {exc}")
            return
        threading.Thread(target=self._send, name="openlineage", daemon=True).start()
        log.info("OpenLineage events on", transport=self.client.transport.kind)

    def emit(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Queue the event matching the run's status (START, COMPLETE, FAIL), once each; nothing when off."""
        if self.client is None:
            return
        try:
            run = conn.execute("SELECT * FROM etl_runs WHERE run_id=?", (run_id,)).fetchone()
            state = _STATES.get(run["status"]) if run is not None else None
            if state is None or (run_id, state) in self.sent or self.build is None:
                return
            event = self.build(self.settings, conn, run, state)
        except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            metrics.ERRORS.labels(stage="lineage").inc()
            log.error("lineage event not built", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            metrics.ERRORS.labels(stage="lineage").inc()
            log.error("lineage event dropped: the sender is behind", run_id=run_id, event=state)
            return
        self.sent.add((run_id, state))

    def _send(self) -> None:
        """The sender thread: one event at a time through the client; a failure is logged and counted."""
        assert self.client is not None
        while True:
            event = self.queue.get()
            try:
                self.client.emit(event)
            except Exception as exc:  # the server is down or refuses: the run is not concerned
                metrics.ERRORS.labels(stage="lineage").inc()
                log.warning("lineage event not sent", event=event.eventType, error=f"{type(exc).__name__}: {exc}")
