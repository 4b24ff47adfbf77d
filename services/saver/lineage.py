"""OpenLineage run events (START, COMPLETE, FAIL) of the runs, sent by a background thread when configured.

Nothing is built or sent unless the official client is configured: ``OPENLINEAGE_URL``, a file
named by ``OPENLINEAGE_CONFIG``, or ``OPENLINEAGE__TRANSPORT__*`` variables (its standard ways).
Events are built on the saver's loop from the database (cheap reads) and queued; one daemon thread
sends them through ``openlineage-python``, whose HTTP transport has a timeout. A queue that is full
drops the event with a log line: a lineage server that is down never slows or fails a run.
"""

import os
import queue
import socket
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState, set_producer
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    schema_dataset,
)

from etl_common import metrics
from etl_common.clock import utc_iso
from saver.settings import SaverSettings

log = structlog.get_logger(__name__)

PRODUCER = "https://github.com/etl-users/etl-users/tree/main/services/saver"
JOB_NAME = "dummyjson_users"
QUEUE_EVENTS = 1000  # events waiting for the sender; more are dropped (a lineage server down for a long time)
_STATES = {"running": RunState.START, "succeeded": RunState.COMPLETE, "failed": RunState.FAIL}
_TABLES = ("raw_users", "processed_users", "invalid_users")


def configured() -> bool:
    """Whether the official client's configuration is present (and OpenLineage is not disabled)."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    return bool(os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE_CONFIG")) or any(
        k.startswith("OPENLINEAGE__TRANSPORT") for k in os.environ
    )


def run_uuid(run_id: str) -> str:
    """The OpenLineage runId of a run: a UUID derived from its run_id, so every event of the run shares it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"etl-users:run:{run_id}"))


class Lineage:
    """Emits each run's events once per saver process; ``emit`` never blocks on the network."""

    def __init__(self, settings: SaverSettings) -> None:
        self.settings = settings
        self.client: OpenLineageClient | None = None
        self.sent: set[tuple[str, str]] = set()
        self.queue: queue.Queue[RunEvent] = queue.Queue(maxsize=QUEUE_EVENTS)
        if not configured():
            return
        set_producer(PRODUCER)
        try:
            self.client = OpenLineageClient()
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
            if state is None or (run_id, state.value) in self.sent:
                return
            event = self._event(conn, run, state)
        except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            metrics.ERRORS.labels(stage="lineage").inc()
            log.error("lineage event not built", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            metrics.ERRORS.labels(stage="lineage").inc()
            log.error("lineage event dropped: the sender is behind", run_id=run_id, event=state.value)
            return
        self.sent.add((run_id, state.value))

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

    def _event(self, conn: sqlite3.Connection, run: sqlite3.Row, state: RunState) -> RunEvent:
        run_facets: dict[str, Any] = {}
        if state == RunState.FAIL:
            message = str(run["error"] or "the run failed")
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=message, programmingLanguage="python"
            )
        job = Job(
            namespace=self.settings.lineage_namespace,
            name=JOB_NAME,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ETL-USERS", jobType="JOB")
            },
        )
        inputs, outputs = [], []
        if state != RunState.START:
            inputs = [self._source(conn, run["run_id"])]
            outputs = self._outputs(conn, run["run_id"])
        return RunEvent(
            eventType=state,
            eventTime=utc_iso(),
            run=Run(runId=run_uuid(run["run_id"]), facets=run_facets),
            job=job,
            inputs=inputs,
            outputs=outputs,
        )

    def _source(self, conn: sqlite3.Connection, run_id: str) -> InputDataset:
        """The source's users with the run's observed schema and its quality report as facets."""
        url = urlsplit(self.settings.source_url)
        facets: dict[str, Any] = {}
        input_facets: dict[str, Any] = {}
        row = conn.execute("SELECT schema FROM run_schema WHERE run_id=?", (run_id,)).fetchone()
        if row is not None:
            observed = orjson.loads(row[0])
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=_schema_fields(observed["fields"]))
        row = conn.execute("SELECT report FROM run_quality WHERE run_id=?", (run_id,)).fetchone()
        if row is not None:
            report = orjson.loads(row[0])
            input_facets["dataQualityMetrics"] = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                rowCount=int(report["records"]),
                columnMetrics={
                    name: data_quality_metrics_input_dataset.ColumnMetrics(
                        nullCount=int(c["nulls"]), distinctCount=int(c["distinct"])
                    )
                    for name, c in report["columns"].items()
                },
            )
            input_facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
                assertions=[
                    data_quality_assertions_dataset.Assertion(
                        assertion=f"rule:{rule}", success=int(n) == 0, column=rule, actual=str(n), expected="0"
                    )
                    for rule, n in report["rules"].items()
                ]
            )
        return InputDataset(
            namespace=f"{url.scheme}://{url.netloc}",
            name=url.path or "/",
            facets=facets,
            inputFacets=input_facets,
        )

    def _outputs(self, conn: sqlite3.Connection, run_id: str) -> list[OutputDataset]:
        """The three tables (rows of the run) and the three files (records, bytes), where they went."""
        db = f"sqlite://{socket.gethostname()}{Path(self.settings.db_path).resolve()}"
        outputs = []
        for table in _TABLES:
            rows = conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]
            stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=int(rows))
            outputs.append(OutputDataset(namespace=db, name=table, outputFacets={"outputStatistics": stats}))
        sftp = f"sftp://{self.settings.sftp_host}:{self.settings.sftp_port}"
        local = f"file://{socket.gethostname()}"
        for f in conn.execute("SELECT * FROM uploaded_files WHERE run_id=? ORDER BY kind", (run_id,)):
            where, name = (sftp, f["remote_path"]) if f["remote_path"] else (local, self._local(f["name"]))
            stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=int(f["records"]), size=int(f["bytes"])
            )
            outputs.append(OutputDataset(namespace=where, name=name, outputFacets={"outputStatistics": stats}))
        return outputs

    def _local(self, name: str) -> str:
        return str((Path(self.settings.data_dir) / name).resolve())


def _schema_fields(fields: dict[str, Any], parent: str = "") -> list[schema_dataset.SchemaDatasetFacetFields]:
    """The observed fields under ``parent`` as schema fields, objects with their own fields nested."""
    prefix = parent + "." if parent else ""
    out = []
    for path, f in fields.items():
        rest = path[len(prefix) :]
        if not path.startswith(prefix) or not rest or "." in rest or "[]" in rest:
            continue
        kids = _schema_fields(fields, path) if "object" in f["types"] else []
        out.append(
            schema_dataset.SchemaDatasetFacetFields(name=rest, type="|".join(sorted(f["types"])), fields=kids or None)
        )
    return out
