"""The OpenLineage events of a run, built from the database with the official client's classes (saver.lineage)."""

import socket
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    schema_dataset,
)
from psycopg.conninfo import conninfo_to_dict

from etl_common.clock import utc_iso
from saver.settings import SaverSettings

JOB_NAME = "dummyjson_users"
_TABLES = ("raw_users", "processed_users", "invalid_users")


def run_uuid(run_id: str) -> str:
    """The OpenLineage runId of a run: a UUID derived from its run_id, so every event of the run shares it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"etl-users:run:{run_id}"))


def build(settings: SaverSettings, conn: sqlite3.Connection, run: sqlite3.Row, state: str) -> RunEvent:
    """The run's event of type ``state`` (START, COMPLETE, FAIL), from what the database holds."""
    run_facets: dict[str, Any] = {}
    if state == "FAIL":
        message = str(run["error"] or "the run failed")
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="python"
        )
    job = Job(
        namespace=settings.lineage_namespace,
        name=JOB_NAME,
        facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ETL-USERS", jobType="JOB")
        },
    )
    inputs, outputs = [], []
    if state != "START":
        inputs = [_source(settings, conn, run["run_id"])]
        outputs = _outputs(settings, conn, run["run_id"])
    return RunEvent(
        eventType=RunState(state),
        eventTime=utc_iso(),
        run=Run(runId=run_uuid(run["run_id"]), facets=run_facets),
        job=job,
        inputs=inputs,
        outputs=outputs,
    )


def _source(settings: SaverSettings, conn: sqlite3.Connection, run_id: str) -> InputDataset:
    """The source's users with the run's observed schema and its quality report as facets."""
    url = urlsplit(settings.source_url)
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


def _outputs(settings: SaverSettings, conn: sqlite3.Connection, run_id: str) -> list[OutputDataset]:
    """The three tables (rows of the run) and the three files (records, bytes), where they went."""
    db, prefix = tables_place(settings, conn)
    outputs = []
    for table in _TABLES:
        rows = conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=int(rows))
        outputs.append(OutputDataset(namespace=db, name=prefix + table, outputFacets={"outputStatistics": stats}))
    sftp = f"sftp://{settings.sftp_host}:{settings.sftp_port}"
    local = f"file://{socket.gethostname()}"
    for f in conn.execute("SELECT * FROM uploaded_files WHERE run_id=? ORDER BY kind", (run_id,)):
        local_path = str((Path(settings.data_dir) / f["name"]).resolve())
        where, name = (sftp, f["remote_path"]) if f["remote_path"] else (local, local_path)
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=int(f["records"]), size=int(f["bytes"])
        )
        outputs.append(OutputDataset(namespace=where, name=name, outputFacets={"outputStatistics": stats}))
    return outputs


def tables_place(settings: SaverSettings, conn: sqlite3.Connection) -> tuple[str, str]:
    """The namespace of the store's tables and the prefix of their names, never a user or a password.

    OpenLineage's dataset naming (spec/Naming.md): PostgreSQL is ``postgres://{host}:{port}`` and
    ``{database}.{schema}.{table}`` (the database and schema the saver's connection uses). SQLite has no entry there:
    its file is the data source, ``sqlite://{host}{absolute path}``, and the table is the name.
    """
    database = settings.database()
    if database.engine != "postgresql":
        return f"sqlite://{socket.gethostname()}{Path(settings.db_path).resolve()}", ""
    params = conninfo_to_dict(database.url)
    host = str(params.get("host") or "").split(",")[0]
    port = str(params.get("port") or "").split(",")[0] or "5432"
    if not host or host.startswith("/"):  # a Unix socket (libpq's default): the server is on this host
        host = socket.gethostname()
    if ":" in host:  # an IPv6 address, bracketed as in a URI
        host = f"[{host}]"
    name, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
    return f"postgres://{host}:{port}", f"{name}.{schema}."


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
