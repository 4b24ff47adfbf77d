-- The data-quality report (as ../0004_quality.sql): the rules each invalid record broke, one report per loaded run.
ALTER TABLE invalid_users ADD COLUMN failed_rules text COLLATE "C";

CREATE TABLE run_quality (
    run_id      text COLLATE "C" PRIMARY KEY REFERENCES etl_runs (run_id),
    report      text NOT NULL,
    computed_at text COLLATE "C" NOT NULL
);
