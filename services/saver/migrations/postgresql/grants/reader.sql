-- The API's role (ETL_DATABASE_READER_ROLE): reads every table, writes none. Applied by the migrator after the
-- migrations, so a table a later migration adds is readable too. {role} and {schema} are filled in as identifiers.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {schema} FROM {role};
ALTER ROLE {role} SET default_transaction_read_only = on;
