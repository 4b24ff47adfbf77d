"""Prometheus metrics of the pipeline, defined once (etl_ prefix, base units, no ids in labels)."""

from prometheus_client import Counter, Gauge, Histogram

_PAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RECORDS = Counter(
    "etl_records_total",
    "Records by stage (extract, transform, load, upload) and outcome (fetched, valid, invalid, loaded, uploaded).",
    ["stage", "outcome"],
)
PAGES = Counter("etl_pages_total", "Pages handled by stage and outcome.", ["stage", "outcome"])
PAGE_DURATION = Histogram(
    "etl_page_duration_seconds",
    "Time to handle one page, by stage.",
    ["stage"],
    buckets=_PAGE_BUCKETS,
)
STAGE_DURATION = Histogram(
    "etl_stage_duration_seconds",
    "Duration of a whole stage of a run (extract, load, quality, files, upload, run).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
SOURCE_REQUESTS = Counter(
    "etl_source_requests_total",
    "HTTP requests to the source by status code (or 'error').",
    ["status"],
)
SOURCE_RETRIES = Counter("etl_source_retries_total", "Retries of source requests.")
RUNS = Counter(
    "etl_runs_total",
    "Runs finished by the reporting stage and their outcome.",
    ["stage", "outcome"],
)
STREAM_RECLAIMED = Counter("etl_stream_reclaimed_total", "Entries claimed from dead consumers, by group.", ["group"])
STREAM_DEAD_LETTERED = Counter(
    "etl_stream_dead_lettered_total",
    "Entries moved to the dead-letter stream, by group.",
    ["group"],
)
# Stream length, pending entries, lag and oldest pending age are read from Redis at scrape time
# by etl_common.streamstats (etl_stream_length_entries, etl_stream_pending_entries, ...).
BACKPRESSURE_WAITS = Counter(
    "etl_backpressure_wait_seconds_total",
    "Time the extractor waited for the raw stream's backlog to drain.",
)
SFTP_UPLOADS = Counter("etl_sftp_uploads_total", "SFTP upload attempts by outcome.", ["outcome"])
SFTP_BYTES = Counter("etl_sftp_uploaded_bytes_total", "Bytes uploaded over SFTP.")
LAST_SUCCESS = Gauge("etl_last_success_timestamp_seconds", "Unix time at which the last run succeeded (saver).")
LAST_RUN_DURATION = Gauge(
    "etl_last_run_duration_seconds",
    "Duration of the last succeeded run, from its start to its upload (saver).",
)
LAST_RUN_INVALID_RATIO = Gauge(
    "etl_last_run_invalid_ratio",
    "Share (0 to 1) of the records of the last loaded run that were invalid, from its quality report (saver).",
)
RUN_STARTED = Gauge(
    "etl_last_run_start_timestamp_seconds",
    "Unix time at which the extractor started or resumed its latest run.",
)
RUN_PROGRESS = Gauge("etl_run_progress_records", "Records of the current run handled so far, by stage.", ["stage"])
RUN_EXPECTED = Gauge("etl_run_expected_records", "Records the source announced for the current run.")
RUN_WARNINGS = Counter(
    "etl_run_warnings_total",
    "Things a run noticed and recorded in its warnings, by kind (source_total_changed, records_differ_from_total).",
    ["kind"],
)
ERRORS = Counter("etl_errors_total", "Unexpected errors (bugs or dependency failures), by stage.", ["stage"])
API_REQUESTS = Counter(
    "etl_api_requests_total",
    "API requests by method, route template and status code.",
    ["method", "route", "status"],
)
API_DURATION = Histogram(
    "etl_api_request_duration_seconds",
    "API request latency by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- extractor: the run's truth (duplicates, caps, lease) ---
RUN_DUPLICATE_IDS = Counter(
    "etl_run_duplicate_ids_total", "User ids a run fetched again (overlapping pages); recorded in its warnings."
)
RUN_ABORTED = Counter(
    "etl_run_aborted_total",
    "Runs failed for good because the source cannot give a correct run, by reason (repeats, records_cap, pages_cap).",
    ["reason"],
)
LEASE_LOST = Counter(
    "etl_extract_lease_lost_total", "Runs an extractor stopped writing because another extractor took its lease."
)
