-- One copy of each user per run (issue 23). The raw row's record (masked) is the only JSON kept: a processed row
-- keeps its typed columns and department_code, and refers to its raw row by (run_id, page, position); the view
-- processed_records gives the processed record back, the raw record with "department_code" spliced in before its
-- last "}" (saver.userrows._with_code), byte for byte. processed_users.record is now NULL unless the view could not
-- spell it (a code JSON escapes, a row without its raw row): such rows keep their whole record, read as before.
-- Old rows are rewritten here: a record equal to what the view derives becomes NULL; any other (an older shape)
-- stays as it was. The column is dropped and added again to let it be NULL (SQLite 3.35 or newer). The old rows'
-- pages shrink in place: the file gives that space back once retention removes those runs, or after a VACUUM.
ALTER TABLE processed_users ADD COLUMN kept_record TEXT;

-- The same expression as the view processed_records below.
UPDATE processed_users SET kept_record = CASE WHEN record IS (
    SELECT substr(r.record, 1, length(r.record) - 1) || CASE r.record WHEN '{}' THEN '' ELSE ',' END
           || '"department_code":' || COALESCE('"' || processed_users.department_code || '"', 'null') || '}'
    FROM raw_users r
    WHERE r.run_id = processed_users.run_id AND r.page = processed_users.page AND r.position = processed_users.position
) THEN NULL ELSE record END;

ALTER TABLE processed_users DROP COLUMN record;

ALTER TABLE processed_users RENAME COLUMN kept_record TO record;

CREATE VIEW processed_records AS
SELECT p.id, p.run_id, p.page, p.position, p.user_id, p.first_name, p.last_name, p.email, p.username, p.age,
       p.gender, p.department, p.department_code, p.title, p.role, p.city, p.state, p.user_agent, p.inserted_at,
       COALESCE(p.record, (
           SELECT substr(r.record, 1, length(r.record) - 1) || CASE r.record WHEN '{}' THEN '' ELSE ',' END
                  || '"department_code":' || COALESCE('"' || p.department_code || '"', 'null') || '}'
           FROM raw_users r WHERE r.run_id = p.run_id AND r.page = p.page AND r.position = p.position
       )) AS record
FROM processed_users p;
