-- Indexes for the read API: one covering index gives every summary chart of a run in one index scan.
-- It starts with (run_id, department_code), so it also serves what processed_users_dept served.
CREATE INDEX processed_users_summary ON processed_users (run_id, department_code, department, gender, age, user_agent);
DROP INDEX processed_users_dept;
