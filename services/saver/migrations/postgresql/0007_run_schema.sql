-- Schema drift (as ../0007_run_schema.sql): each processed page's observed schema until its run is merged, then
-- one row per run with the merged schema, its contract violations and the drift against the previous run.
CREATE TABLE page_schemas (
    run_id  text COLLATE "C" NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    page    bigint NOT NULL,
    summary text NOT NULL,
    PRIMARY KEY (run_id, page)
);

CREATE TABLE run_schema (
    run_id          text COLLATE "C" PRIMARY KEY REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    schema          text NOT NULL,
    drift           text NOT NULL,
    previous_run_id text COLLATE "C",
    computed_at     text COLLATE "C" NOT NULL
);
