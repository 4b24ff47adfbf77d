"""Saver settings."""

from pydantic import Field, SecretStr

from etl_common.settings import BaseEtlSettings


class SaverSettings(BaseEtlSettings):
    """Database, files, SFTP and encryption."""

    db_path: str = "database/data.db"
    data_dir: str = "data"
    # Pages read per XREADGROUP call; a batch is loaded in one transaction.
    batch_pages: int = Field(10, ge=1, le=1000)

    sftp_enabled: bool = True
    sftp_host: str = "127.0.0.1"
    sftp_port: int = Field(22, ge=1, le=65535)
    sftp_user: str = "etl"
    sftp_key_path: str = "ssh_keys/id_ed25519"
    sftp_key_passphrase: SecretStr | None = None
    sftp_known_hosts: str = "ssh_keys/known_hosts"
    sftp_remote_dir: str = "upload"
    sftp_timeout_s: float = Field(15.0, gt=0)
    # Attempts within one upload try, and the delay before the first retry (doubling).
    sftp_attempts: int = Field(3, ge=1)
    sftp_backoff_s: float = Field(1.0, ge=0)
    # After a failed upload try, the next one is due after this delay (doubling up to the max).
    upload_retry_s: float = Field(30.0, gt=0)
    upload_retry_max_s: float = Field(900.0, gt=0)
