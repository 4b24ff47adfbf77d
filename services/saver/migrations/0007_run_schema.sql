-- Schema drift (docs/contracts.md). Each processed page's observed schema as the transformer summarised it,
-- kept until its run is loaded and merged; then one row per run: the merged schema with its contract
-- violations, and the drift against the previous succeeded run.
CREATE TABLE page_schemas (
    run_id  TEXT NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    page    INTEGER NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (run_id, page)
) WITHOUT ROWID;

CREATE TABLE run_schema (
    run_id          TEXT PRIMARY KEY REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    schema          TEXT NOT NULL,
    drift           TEXT NOT NULL,
    previous_run_id TEXT,
    computed_at     TEXT NOT NULL
) WITHOUT ROWID;
