-- The three files of a run appended while its pages load (as ../0005_loading_files.sql): how far each is written.
CREATE TABLE loading_files (
    run_id              text COLLATE "C" PRIMARY KEY REFERENCES etl_runs (run_id),
    next_page           bigint NOT NULL,
    raw_bytes           bigint NOT NULL DEFAULT 0,
    raw_records         bigint NOT NULL DEFAULT 0,
    processed_bytes     bigint NOT NULL DEFAULT 0,
    processed_records   bigint NOT NULL DEFAULT 0,
    dlq_bytes           bigint NOT NULL DEFAULT 0,
    dlq_records         bigint NOT NULL DEFAULT 0
);
