-- The data-quality report: the rules each invalid record broke, and one report per loaded run.
-- failed_rules: the broken rules' fields, comma-separated, each once (e.g. "email,age"); NULL for rows
-- loaded before this migration or from a transformer that did not name them.
ALTER TABLE invalid_users ADD COLUMN failed_rules TEXT;

CREATE TABLE run_quality (
    run_id      TEXT PRIMARY KEY REFERENCES etl_runs (run_id),
    report      TEXT NOT NULL,
    computed_at TEXT NOT NULL
) WITHOUT ROWID;
