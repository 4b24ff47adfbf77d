-- One copy of each user per run (issue 23). The raw row's record (masked) is the only JSON kept: a processed row
-- keeps its typed columns and department_code, and refers to its raw row by (run_id, page, position); the view
-- processed_records gives the processed record back, the raw record with "department_code" spliced in before its
-- last "}" (saver.userrows._with_code), byte for byte. processed_users.record is now NULL unless the view could not
-- spell it (a code JSON escapes, a row without its raw row): such rows keep their whole record, read as before.
-- Old rows are rewritten here: a record equal to what the view derives is set to NULL (the space is reused by later
-- runs); any other (older shapes) stays as it was. The table is rebuilt to let record be NULL.
CREATE TABLE processed_users_0008 (
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
    record          TEXT,
    UNIQUE (run_id, page, position)
);

-- A record equal to what the view derives (the same expression as processed_records below) becomes NULL.
INSERT INTO processed_users_0008
SELECT p.id, p.run_id, p.page, p.position, p.user_id, p.first_name, p.last_name, p.email, p.username, p.age,
       p.gender, p.department, p.department_code, p.title, p.role, p.city, p.state, p.user_agent, p.inserted_at,
       CASE WHEN p.record IS (
           SELECT substr(r.record, 1, length(r.record) - 1) || CASE r.record WHEN '{}' THEN '' ELSE ',' END
                  || '"department_code":' || COALESCE('"' || p.department_code || '"', 'null') || '}'
           FROM raw_users r WHERE r.run_id = p.run_id AND r.page = p.page AND r.position = p.position
       ) THEN NULL ELSE p.record END
FROM processed_users p ORDER BY p.id;

DROP TABLE processed_users;

ALTER TABLE processed_users_0008 RENAME TO processed_users;

CREATE INDEX processed_users_summary ON processed_users (run_id, department_code, department, gender, age, user_agent);

CREATE VIEW processed_records AS
SELECT p.id, p.run_id, p.page, p.position, p.user_id, p.first_name, p.last_name, p.email, p.username, p.age,
       p.gender, p.department, p.department_code, p.title, p.role, p.city, p.state, p.user_agent, p.inserted_at,
       COALESCE(p.record, (
           SELECT substr(r.record, 1, length(r.record) - 1) || CASE r.record WHEN '{}' THEN '' ELSE ',' END
                  || '"department_code":' || COALESCE('"' || p.department_code || '"', 'null') || '}'
           FROM raw_users r WHERE r.run_id = p.run_id AND r.page = p.page AND r.position = p.position
       )) AS record
FROM processed_users p;
