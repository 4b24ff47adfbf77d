-- What a run noticed without failing (the source's total changed under it, ...): a JSON array of texts, NULL when none.
ALTER TABLE etl_runs ADD COLUMN warnings TEXT;
