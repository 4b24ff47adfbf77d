-- One copy of each user per run: the twin of ../0008_one_copy.sql (read it for the why). processed_users.record
-- may now be NULL, and is NULL wherever the view processed_records gives the same text back from the raw row.
ALTER TABLE processed_users ALTER COLUMN record DROP NOT NULL;

UPDATE processed_users p SET record = NULL
FROM raw_users r
WHERE r.run_id = p.run_id AND r.page = p.page AND r.position = p.position
  AND p.record = substr(r.record, 1, length(r.record) - 1) || CASE r.record WHEN '{}' THEN '' ELSE ',' END
      || '"department_code":' || COALESCE('"' || p.department_code || '"', 'null') || '}';

CREATE VIEW processed_records AS
SELECT p.id, p.run_id, p.page, p.position, p.user_id, p.first_name, p.last_name, p.email, p.username, p.age,
       p.gender, p.department, p.department_code, p.title, p.role, p.city, p.state, p.user_agent, p.inserted_at,
       COALESCE(p.record, (
           SELECT substr(r.record, 1, length(r.record) - 1) || CASE r.record WHEN '{}' THEN '' ELSE ',' END
                  || '"department_code":' || COALESCE('"' || p.department_code || '"', 'null') || '}'
           FROM raw_users r WHERE r.run_id = p.run_id AND r.page = p.page AND r.position = p.position
       )) AS record
FROM processed_users p;
