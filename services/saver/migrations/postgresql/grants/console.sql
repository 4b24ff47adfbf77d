-- The SQL console's role (ETL_DATABASE_CONSOLE_ROLE, the login of ETL_API_SQL_DATABASE_URL): SELECT on the typed
-- columns of the four detail tables and nothing else. Never record (masked secrets) or raw_line (unparsed text);
-- no other table. The same columns as the console's allow-list on SQLite (api/sqlconsole.py ALLOWED; a test ties
-- them). {role} and {schema} are filled in as identifiers by the migrator.
REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role};
REVOKE CREATE ON SCHEMA {schema} FROM {role};
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT (
    id, run_id, run_timestamp, raw_file, processed_file, dlq_file, valid_count, invalid_count, status, trigger,
    started_at, finished_at, total_expected, raw_count, pages_expected, error, updated_at, warnings, rows_removed_at
) ON etl_runs TO {role};
GRANT SELECT (
    id, run_id, page, position, user_id, first_name, last_name, email, username, age, gender, department, inserted_at
) ON raw_users TO {role};
GRANT SELECT (
    id, run_id, page, position, user_id, first_name, last_name, email, username, age, gender, department, inserted_at,
    department_code, title, role, city, state, user_agent
) ON processed_users TO {role};
GRANT SELECT (
    id, run_id, page, position, user_id, first_name, last_name, email, username, age, gender, department, inserted_at,
    error_reason, failed_rules
) ON invalid_users TO {role};
-- Every session of the role is read-only and bounded even outside the API (which sets its own, lower, limit).
ALTER ROLE {role} SET default_transaction_read_only = on;
ALTER ROLE {role} SET statement_timeout = '60s';
ALTER ROLE {role} SET idle_in_transaction_session_timeout = '60s';
-- set_config() is the one settings-changing function PUBLIC may call (the file-reading ones, pg_read_file,
-- pg_ls_dir, lo_import, COPY ... PROGRAM, need superuser or the pg_read_server_files role, which it is not
-- given). Revoking it from PUBLIC needs the function's owner (a superuser); the migrator's own role keeps it.
-- The API refuses the console while its role can still call it.
REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO CURRENT_USER;
-- Functions that write although the transaction is READ ONLY: pg_logical_emit_message (a WAL record, kept even when
-- the transaction rolls back, sent to every logical decoding consumer) and the large-object writers (pg_largeobject
-- is exempt from READ ONLY). Every signature of each name, so the list holds on every PostgreSQL version; the
-- migrator's role keeps them, and the API refuses the console while its role can still call one (api/pgconsole.py).
DO $grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND p.proname IN ('pg_logical_emit_message', 'lo_create', 'lo_creat', 'lo_from_bytea', 'lo_import',
                            'lo_export', 'lo_open', 'lowrite', 'lo_put', 'lo_truncate', 'lo_truncate64', 'lo_unlink')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO CURRENT_USER', f);
    END LOOP;
END
$grants$;
