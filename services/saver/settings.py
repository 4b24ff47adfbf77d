"""Saver settings."""

from pydantic import Field, SecretStr, model_validator

from etl_common.db import DatabaseUrl, DatabaseUrlSetting, parse_url
from etl_common.settings import BaseEtlSettings


class SaverSettings(BaseEtlSettings):
    """Database, files, SFTP and encryption."""

    db_path: str = "database/data.db"
    # The engine and its address: empty is SQLite at db_path; postgresql://user:password@host:5432/db for PostgreSQL.
    database_url: DatabaseUrlSetting = None
    # PostgreSQL only: existing roles the migrator grants reading to (the API's) and the typed columns to (the SQL
    # console's login); empty: no grant.
    database_reader_role: str = Field("", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    database_console_role: str = Field("", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    data_dir: str = "data"
    # Pages read per XREADGROUP call; a batch is loaded in one transaction.
    batch_pages: int = Field(10, ge=1, le=1000)

    sftp_enabled: bool = True
    sftp_host: str = "127.0.0.1"
    sftp_port: int = Field(22, ge=1, le=65535)
    sftp_user: str = "etl"
    sftp_key_path: str = "ssh_keys/id_ed25519"
    # The private key's text itself (from a secret); when set it is used instead of sftp_key_path.
    sftp_key: SecretStr | None = None
    sftp_key_passphrase: SecretStr | None = None
    sftp_known_hosts: str = "ssh_keys/known_hosts"
    sftp_remote_dir: str = "upload"
    # Bound of every wait on the server, from connect to each SFTP operation (saver/sftpwatch.py): a server that
    # stops answering ends the upload try instead of holding it (and the run's finishing lock) forever.
    sftp_timeout_s: float = Field(15.0, gt=0)
    # Attempts within one upload try, and the delay before the first retry (doubling).
    sftp_attempts: int = Field(3, ge=1)
    sftp_backoff_s: float = Field(1.0, ge=0)
    # After a failed upload try, the next one is due after this delay (doubling up to the max).
    upload_retry_s: float = Field(30.0, gt=0)
    upload_retry_max_s: float = Field(900.0, gt=0)

    # A full database or data volume: the pages stay in Redis and the load is tried again after this delay
    # (doubling up to the max), until space is freed.
    storage_retry_s: float = Field(2.0, gt=0)
    storage_retry_max_s: float = Field(60.0, gt=0)
    # Bytes held in a file beside the SQLite database (``<db>-reserve``) and given back when the volume is full,
    # so that the runs in flight can still show why they wait; 0 holds none.
    storage_reserve_bytes: int = Field(1 << 20, ge=0)
    # The run watchdog: a run with no progress (no page, event or status change) for this long is failed with
    # the stage that stalled; it also fails a run whose announced pages Redis no longer holds (lost in transit).
    run_stall_timeout_s: float = Field(1800.0, gt=0)
    # How often the watchdog looks at the runs in flight (a lost page is confirmed by two looks in a row).
    watchdog_interval_s: float = Field(30.0, gt=0)

    # age encryption of the three files before upload, to public keys only: the saver cannot read them back.
    encryption_enabled: bool = False
    # age public keys (age1...), separated by commas or spaces.
    encryption_recipients: str = ""
    # A file of age public keys, one per line ('#' comments), e.g. a mounted secret or config map.
    encryption_recipients_file: str = ""

    # Retention (saver/retention.py): keep N days and/or the newest N runs of each kind of data; 0 keeps it forever.
    # A run outside any bound set loses that data; runs in progress and the latest succeeded run are never touched.
    retention_rows_days: int = Field(0, ge=0)
    retention_rows_runs: int = Field(0, ge=0)
    retention_files_days: int = Field(0, ge=0)
    retention_files_runs: int = Field(0, ge=0)
    retention_remote_days: int = Field(0, ge=0)
    retention_remote_runs: int = Field(0, ge=0)
    retention_dead_letters_days: int = Field(0, ge=0)
    retention_dead_letters_runs: int = Field(0, ge=0)
    # Run headers and quality reports stay unless these are set: a run outside them loses everything.
    retention_headers_days: int = Field(0, ge=0)
    retention_headers_runs: int = Field(0, ge=0)
    # Apply retention after each succeeded run (on demand it is always possible).
    retention_after_run: bool = True
    # Pages returned to the file system per incremental-vacuum step (each step is a short write transaction).
    retention_vacuum_pages: int = Field(2048, ge=1, le=1_000_000)
    # A field whose null-or-missing share rises by more than this against the previous succeeded run is drift.
    drift_null_rate_jump: float = Field(0.1, gt=0, le=1)
    # The source, named as the runs' input dataset in lineage events (the extractor reads the same setting).
    source_url: str = "https://dummyjson.com/users"
    # The OpenLineage job namespace; events go out only when the client is configured (OPENLINEAGE_URL, ...).
    lineage_namespace: str = Field("etl", min_length=1, max_length=200)

    def database(self) -> DatabaseUrl:
        """The engine and address: ``database_url``, or the SQLite file ``db_path`` when it is empty."""
        return parse_url(self.database_url.get_secret_value() if self.database_url else "", self.db_path)

    @model_validator(mode="after")
    def _sqlite_url_is_the_file(self) -> "SaverSettings":
        # ETL_DATABASE_URL=sqlite:///path names the file: db_path follows it, so every reader of db_path (the store,
        # the worker, the report job, lineage) uses the file the API reads too.
        database = self.database()
        if self.database_url is not None and database.path is not None:
            self.db_path = str(database.path)
        return self

    @model_validator(mode="after")
    def _encryption_has_recipients(self) -> "SaverSettings":
        # Fail at start-up, not at the first upload: encryption on without a recipient is a broken deployment.
        if self.encryption_enabled and not (self.encryption_recipients.strip() or self.encryption_recipients_file):
            raise ValueError(
                "ETL_ENCRYPTION_ENABLED is on but neither ETL_ENCRYPTION_RECIPIENTS "
                "nor ETL_ENCRYPTION_RECIPIENTS_FILE is set"
            )
        return self
