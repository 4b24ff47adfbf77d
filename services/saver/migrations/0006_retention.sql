-- Retention (saver/retention.py): what was removed of each run, and a log of every application or plan.
-- rows_removed_at: the run's rows (raw, processed, invalid) were removed; its header, page ledger and quality
-- report stay, so a page replayed later still adds nothing.
ALTER TABLE etl_runs ADD COLUMN rows_removed_at TEXT;
-- local_removed_at / remote_removed_at: the file was removed from the data directory / the SFTP server.
ALTER TABLE uploaded_files ADD COLUMN local_removed_at TEXT;
ALTER TABLE uploaded_files ADD COLUMN remote_removed_at TEXT;

CREATE TABLE retention_log (
    id           INTEGER PRIMARY KEY,
    request_id   TEXT,
    trigger      TEXT NOT NULL,
    dry_run      INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    report       TEXT NOT NULL
);
CREATE INDEX retention_log_request ON retention_log (request_id);
