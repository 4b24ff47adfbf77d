"""Prometheus metrics of the pipeline, defined once (etl_ prefix, base units, no ids in labels).

Every family is made here unregistered and tagged with the services that own it; each service calls
``register(<service>)`` at start and so exports only its own families: ``absent()`` alerts (the saver's
gauges) and ``max()`` over the services depend on it. A new family goes in its owner's block below, made
with ``counter``, ``gauge`` or ``histogram`` (never ``Counter(...)`` directly: it would be in every process).
"""

import threading
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

EXTRACTOR, TRANSFORMER, SAVER, API = "extractor", "transformer", "saver", "api"
SERVICES = (EXTRACTOR, TRANSFORMER, SAVER, API)
WORKERS = (EXTRACTOR, TRANSFORMER, SAVER)

# Family -> the services that export it.
OWNERS: dict[MetricWrapperBase, tuple[str, ...]] = {}
# Family -> service -> label values its series start with at 0, so increase() sees their first event.
PRESET: dict[MetricWrapperBase, dict[str, list[tuple[str, ...]]]] = {}
# registry -> services registered in it; weak, so a registry dropped (a test's) is forgotten, never mistaken for a new
# one that reuses its id
_registered: "weakref.WeakKeyDictionary[CollectorRegistry, set[str]]" = weakref.WeakKeyDictionary()
_guard = threading.Lock()

_PAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _own(owners: str | tuple[str, ...], metric: MetricWrapperBase) -> None:
    owners = (owners,) if isinstance(owners, str) else owners
    unknown = set(owners) - set(SERVICES)
    if unknown:
        raise ValueError(f"{metric._name}: unknown owner(s) {sorted(unknown)}; owners are {SERVICES}")
    OWNERS[metric] = owners


def counter(
    owners: str | tuple[str, ...],
    name: str,
    doc: str,
    labels: tuple[str, ...] = (),
    preset: dict[str, list[tuple[str, ...]]] | None = None,
) -> Counter:
    """A counter exported by ``owners`` only (``register``); ``preset``: service -> label values exported at 0.

    A labelled series that first appears at 1 is no increase to Prometheus: an alert on ``increase()``
    would miss the first event after every start. Preset the series such alerts watch.
    """
    metric = Counter(name, doc, labels, registry=None)
    _own(owners, metric)
    if preset:
        PRESET[metric] = preset
    return metric


def gauge(owners: str | tuple[str, ...], name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    """A gauge exported by ``owners`` only (``register``)."""
    metric = Gauge(name, doc, labels, registry=None)
    _own(owners, metric)
    return metric


def histogram(
    owners: str | tuple[str, ...], name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
) -> Histogram:
    """A histogram exported by ``owners`` only (``register``)."""
    metric = Histogram(name, doc, labels, buckets=buckets, registry=None)
    _own(owners, metric)
    return metric


def owned_by(service: str) -> list[MetricWrapperBase]:
    """The families ``service`` exports."""
    return [m for m, owners in OWNERS.items() if service in owners]


def register(service: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Export the families ``service`` owns on ``registry`` (/metrics); once per process, later calls do nothing."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {SERVICES}")
    with _guard:
        done = _registered.setdefault(registry, set())
        if service in done:
            return
        already = {id(m) for s in done for m in owned_by(s)}
        for metric in owned_by(service):
            if id(metric) not in already:
                registry.register(metric)
                already.add(id(metric))
            for values in PRESET.get(metric, {}).get(service, []):
                metric.labels(*values)
        done.add(service)


# --- workers: extractor, transformer, saver ---------------------------------------------------------------------
RECORDS = counter(
    WORKERS,
    "etl_records_total",
    "Records by stage (extract, transform, load, upload) and outcome (fetched, valid, invalid, loaded, uploaded).",
    ("stage", "outcome"),
)
PAGES = counter(WORKERS, "etl_pages_total", "Pages handled by stage and outcome.", ("stage", "outcome"))
PAGE_DURATION = histogram(
    WORKERS, "etl_page_duration_seconds", "Time to handle one page, by stage.", ("stage",), _PAGE_BUCKETS
)
ERRORS = counter(WORKERS, "etl_errors_total", "Unexpected errors (bugs or dependency failures), by stage.", ("stage",))
STREAM_RECLAIMED = counter(
    WORKERS, "etl_stream_reclaimed_total", "Entries claimed from dead consumers, by group.", ("group",)
)
STREAM_DEAD_LETTERED = counter(
    WORKERS, "etl_stream_dead_lettered_total", "Entries moved to the dead-letter stream, by group.", ("group",)
)
# Stream length, pending entries, lag and oldest pending age are read from Redis at scrape time
# by etl_common.streamstats (etl_stream_length_entries, etl_stream_pending_entries, ...).

# --- extractor and saver: runs ----------------------------------------------------------------------------------
STAGE_DURATION = histogram(
    (EXTRACTOR, SAVER),
    "etl_stage_duration_seconds",
    "Duration of a whole stage of a run (extract, load, quality, files, upload, run).",
    ("stage",),
    (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
RUNS = counter(
    (EXTRACTOR, SAVER),
    "etl_runs_total",
    "Runs finished by the reporting stage and their outcome.",
    ("stage", "outcome"),
    preset={  # EtlRunFailed
        EXTRACTOR: [("extract", "succeeded"), ("extract", "failed")],
        SAVER: [("save", "succeeded"), ("save", "upload_pending")],
    },
)
RUN_PROGRESS = gauge(
    (EXTRACTOR, SAVER), "etl_run_progress_records", "Records of the current run handled so far, by stage.", ("stage",)
)

# --- extractor --------------------------------------------------------------------------------------------------
SOURCE_REQUESTS = counter(
    EXTRACTOR, "etl_source_requests_total", "HTTP requests to the source by status code (or 'error').", ("status",)
)
SOURCE_RETRIES = counter(EXTRACTOR, "etl_source_retries_total", "Retries of source requests.")
BACKPRESSURE_WAITS = counter(
    EXTRACTOR,
    "etl_backpressure_wait_seconds_total",
    "Time the extractor waited for the raw stream's backlog to drain.",
)
RUN_STARTED = gauge(EXTRACTOR, "etl_last_run_start_timestamp_seconds", "Unix time the latest run started or resumed.")
RUN_EXPECTED = gauge(EXTRACTOR, "etl_run_expected_records", "Records the source announced for the current run.")
RUN_WARNINGS = counter(
    EXTRACTOR,
    "etl_run_warnings_total",
    "Things a run noticed and recorded in its warnings, by kind (source_total_changed, records_differ_from_total).",
    ("kind",),
    preset={EXTRACTOR: [("source_total_changed",), ("records_differ_from_total",)]},  # EtlSourceChangedDuringRun
)

# --- saver ------------------------------------------------------------------------------------------------------
LAST_SUCCESS = gauge(SAVER, "etl_last_success_timestamp_seconds", "Unix time the last run succeeded (0: none yet).")
LAST_RUN_DURATION = gauge(
    SAVER,
    "etl_last_run_duration_seconds",
    "Duration of the last succeeded run, from its start to its upload.",
)
LAST_RUN_INVALID_RATIO = gauge(
    SAVER,
    "etl_last_run_invalid_ratio",
    "Share (0 to 1) of the records of the last loaded run that were invalid, from its quality report.",
)
SFTP_UPLOADS = counter(SAVER, "etl_sftp_uploads_total", "SFTP upload attempts by outcome.", ("outcome",))
SFTP_BYTES = counter(SAVER, "etl_sftp_uploaded_bytes_total", "Bytes uploaded over SFTP.")
RETENTION_REMOVED = counter(
    SAVER,
    "etl_retention_removed_total",
    "What retention removed, by kind (rows, files, remote, dead_letters, headers).",
    ("kind",),
)
RETENTION_FREED = counter(
    SAVER,
    "etl_retention_freed_bytes_total",
    "Bytes retention freed, by kind (database pages, files, remote, dead_letters).",
    ("kind",),
)

# --- api --------------------------------------------------------------------------------------------------------
API_REQUESTS = counter(
    API,
    "etl_api_requests_total",
    "API requests by method, route template and status code.",
    ("method", "route", "status"),
)
API_DURATION = histogram(
    API,
    "etl_api_request_duration_seconds",
    "API request latency by method and route template.",
    ("method", "route"),
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# --- saver: store faults, run watchdog and end-of-run invariants ---------------------------------------------
SAVER_STORAGE_FULL = gauge(
    SAVER,
    "etl_saver_storage_full",
    "1 while the saver waits for space on its database or data volume (pages kept in Redis), else 0.",
)
RUNS_STALLED = counter(
    SAVER,
    "etl_runs_stalled_total",
    "Runs the saver's watchdog failed, by reason (stalled: no progress; pages_lost: pages gone from Redis).",
    ("reason",),
    preset={SAVER: [("stalled",), ("pages_lost",)]},
)
RUN_INVARIANT_VIOLATIONS = counter(
    SAVER,
    "etl_run_invariant_violations_total",
    "End-of-run checks a loaded run failed (recorded in its warnings), by check (duplicate_user_ids, table_counts).",
    ("check",),
    preset={SAVER: [("duplicate_user_ids",), ("table_counts",)]},
)

# --- transformer: the data contract (services/transformer/contract.py) ------------------------------------------
CONTRACT_VIOLATIONS = counter(
    TRANSFORMER,
    "etl_contract_violations_total",
    "Records that broke the data contract, by the policy applied (evolve: loaded, freeze: invalid, "
    "discard_value: offending values dropped).",
    ("policy",),
    preset={TRANSFORMER: [("evolve",), ("freeze",), ("discard_value",)]},  # EtlContractBroken
)

# --- saver: schema drift against the previous succeeded run (services/saver/schema.py) -------------------------
SCHEMA_DRIFT = counter(
    SAVER,
    "etl_schema_drift_total",
    "Changes of the users' observed schema against the previous succeeded run, by change "
    "(added, removed, type_changed, null_rate).",
    ("change",),
    preset={SAVER: [("added",), ("removed",), ("type_changed",), ("null_rate",)]},  # EtlSchemaDrift
)

# --- extractor: the run's truth (duplicates, caps, lease) ---
RUN_DUPLICATE_IDS = counter(
    EXTRACTOR,
    "etl_run_duplicate_ids_total",
    "User ids a run fetched again (overlapping pages); recorded in its warnings.",
)
RUN_ABORTED = counter(
    EXTRACTOR,
    "etl_run_aborted_total",
    "Runs failed for good because the source cannot give a correct run, by reason (repeats, records_cap, pages_cap).",
    ("reason",),
    preset={EXTRACTOR: [("repeats",), ("records_cap",), ("pages_cap",)]},
)
LEASE_LOST = counter(
    EXTRACTOR,
    "etl_extract_lease_lost_total",
    "Runs an extractor stopped writing because another extractor took its lease.",
)
