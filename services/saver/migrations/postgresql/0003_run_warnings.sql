-- What a run noticed without failing (as ../0003_run_warnings.sql): a JSON array of texts, NULL when none.
ALTER TABLE etl_runs ADD COLUMN warnings text COLLATE "C";
