-- The three files of a run appended while its pages load (saver/files.py LoadingFiles): how far each is written,
-- updated in the page's own transaction. next_page is the page the files expect next; -1 when a page came out of
-- order (the files are then written from the tables at the end, as before).
CREATE TABLE loading_files (
    run_id              TEXT PRIMARY KEY REFERENCES etl_runs (run_id),
    next_page           INTEGER NOT NULL,
    raw_bytes           INTEGER NOT NULL DEFAULT 0,
    raw_records         INTEGER NOT NULL DEFAULT 0,
    processed_bytes     INTEGER NOT NULL DEFAULT 0,
    processed_records   INTEGER NOT NULL DEFAULT 0,
    dlq_bytes           INTEGER NOT NULL DEFAULT 0,
    dlq_records         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
