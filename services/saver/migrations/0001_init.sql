-- Initial schema: the run header, the three detail tables, the page ledger and the uploaded files.
CREATE TABLE etl_runs (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL UNIQUE,
    run_timestamp   TEXT NOT NULL,
    raw_file        TEXT,
    processed_file  TEXT,
    dlq_file        TEXT,
    valid_count     INTEGER NOT NULL DEFAULT 0,
    invalid_count   INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running','extracted','transformed','loaded','upload_pending','succeeded','failed')),
    trigger         TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    total_expected  INTEGER,
    raw_count       INTEGER NOT NULL DEFAULT 0,
    pages_expected  INTEGER,
    error           TEXT,
    updated_at      TEXT
);
CREATE INDEX etl_runs_status ON etl_runs (status);

CREATE TABLE loaded_pages (
    run_id      TEXT NOT NULL REFERENCES etl_runs (run_id),
    page        INTEGER NOT NULL,
    raw_count   INTEGER NOT NULL,
    valid_count INTEGER NOT NULL,
    invalid_count INTEGER NOT NULL,
    loaded_at   TEXT NOT NULL,
    PRIMARY KEY (run_id, page)
) WITHOUT ROWID;

CREATE TABLE raw_users (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES etl_runs (run_id),
    page        INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    user_id     INTEGER,
    first_name  TEXT,
    last_name   TEXT,
    email       TEXT,
    username    TEXT,
    age         REAL,
    gender      TEXT,
    department  TEXT,
    inserted_at TEXT NOT NULL,
    record      TEXT NOT NULL,
    UNIQUE (run_id, page, position)
);

CREATE TABLE processed_users (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES etl_runs (run_id),
    page            INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    user_id         INTEGER,
    first_name      TEXT,
    last_name       TEXT,
    email           TEXT,
    username        TEXT,
    age             REAL,
    gender          TEXT,
    department      TEXT,
    department_code TEXT,
    title           TEXT,
    role            TEXT,
    city            TEXT,
    state           TEXT,
    user_agent      TEXT,
    inserted_at     TEXT NOT NULL,
    record          TEXT NOT NULL,
    UNIQUE (run_id, page, position)
);
CREATE INDEX processed_users_dept ON processed_users (run_id, department_code);

CREATE TABLE invalid_users (
    id           INTEGER PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES etl_runs (run_id),
    page         INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    user_id      INTEGER,
    first_name   TEXT,
    last_name    TEXT,
    email        TEXT,
    username     TEXT,
    age          REAL,
    gender       TEXT,
    department   TEXT,
    error_reason TEXT NOT NULL,
    raw_line     TEXT,
    inserted_at  TEXT NOT NULL,
    record       TEXT,
    UNIQUE (run_id, page, position)
);

CREATE TABLE uploaded_files (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES etl_runs (run_id),
    kind        TEXT NOT NULL CHECK (kind IN ('raw','processed','dlq')),
    name        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    records     INTEGER NOT NULL,
    encrypted   INTEGER NOT NULL DEFAULT 0,
    remote_path TEXT,
    written_at  TEXT NOT NULL,
    uploaded_at TEXT,
    UNIQUE (run_id, kind)
);
