-- Indexes for the read API (as ../0002_api_indexes.sql): one covering index gives every summary chart of a run.
CREATE INDEX processed_users_summary ON processed_users (run_id, department_code, department, gender, age, user_agent);
DROP INDEX processed_users_dept;
