"""SFTP upload: key authentication, pinned host key, temporary name then rename, size check, retries."""

import posixpath
from pathlib import Path

import paramiko
import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from etl_common import metrics
from etl_common.errors import TransientError
from saver.settings import SaverSettings

log = structlog.get_logger(__name__)


class UploadFailed(TransientError):
    """The files could not be uploaded now; the run stays upload_pending and is retried."""


def load_key(path: str, passphrase: str | None) -> paramiko.PKey:
    """The client key (ed25519, ECDSA or RSA), decrypted with its passphrase when it has one."""
    try:
        return paramiko.PKey.from_path(path, password=passphrase or None)
    except paramiko.PasswordRequiredException as exc:
        raise UploadFailed(f"SFTP key {path} needs a passphrase (set ETL_SFTP_KEY_PASSPHRASE)") from exc
    except paramiko.SSHException as exc:
        raise UploadFailed(f"SFTP key {path} could not be loaded (wrong passphrase or not a key): {exc}") from exc
    except OSError as exc:
        raise UploadFailed(f"SFTP key {path} is unreadable: {exc.strerror}") from exc


def _connect(s: SaverSettings) -> paramiko.SSHClient:
    passphrase = s.sftp_key_passphrase.get_secret_value() if s.sftp_key_passphrase else None
    key = load_key(s.sftp_key_path, passphrase)
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(s.sftp_known_hosts)
    except OSError as exc:
        raise UploadFailed(f"known_hosts {s.sftp_known_hosts} is unreadable: {exc.strerror}") from exc
    # Never trust an unknown host key: the pinned known_hosts is the only source of trust.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            s.sftp_host, port=s.sftp_port, username=s.sftp_user, pkey=key, timeout=s.sftp_timeout_s,
            banner_timeout=s.sftp_timeout_s, auth_timeout=s.sftp_timeout_s,
            look_for_keys=False, allow_agent=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise UploadFailed(
            f"SFTP host key of {s.sftp_host}:{s.sftp_port} does not match known_hosts (possible impersonation)"
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise UploadFailed(f"SFTP authentication as {s.sftp_user!r} was refused") from exc
    except paramiko.SSHException as exc:
        client.close()
        msg = str(exc)
        if "not found in known_hosts" in msg:
            msg = f"SFTP host {s.sftp_host}:{s.sftp_port} is not in known_hosts {s.sftp_known_hosts}"
        raise UploadFailed(msg) from exc
    except OSError as exc:
        client.close()
        raise UploadFailed(f"SFTP server {s.sftp_host}:{s.sftp_port} unreachable: {exc}") from exc
    return client


def _mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
    parts, current = path.split("/"), ""
    for part in parts:
        if not part:
            current = "/"
            continue
        current = posixpath.join(current, part) if current else part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current)


def _upload_once(s: SaverSettings, files: dict[str, tuple[Path, str]]) -> dict[str, str]:
    client = _connect(s)
    try:
        sftp = client.open_sftp()
        remote: dict[str, str] = {}
        for kind, (local, name) in files.items():
            target = posixpath.join(s.sftp_remote_dir, name)
            _mkdirs(sftp, posixpath.dirname(target))
            tmp = target + ".part"
            size = local.stat().st_size
            # confirm=True stats the upload and fails on a size mismatch.
            sftp.put(str(local), tmp, confirm=True)
            sftp.posix_rename(tmp, target)
            if sftp.stat(target).st_size != size:
                raise UploadFailed(f"size of {target} on the server differs from the local file")
            metrics.SFTP_BYTES.inc(size)
            remote[kind] = target
        return remote
    except (OSError, paramiko.SSHException) as exc:
        raise UploadFailed(f"SFTP transfer failed: {exc}") from exc
    finally:
        client.close()


def upload(s: SaverSettings, files: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """Upload ``kind -> (local path, remote name)``; retried with backoff, UploadFailed when all tries fail."""
    retrying = Retrying(
        stop=stop_after_attempt(s.sftp_attempts),
        wait=wait_exponential(multiplier=s.sftp_backoff_s, max=60),
        retry=retry_if_exception_type(UploadFailed),
        reraise=True,
        before_sleep=lambda st: log.warning(
            "sftp upload failed, retrying", attempt=st.attempt_number, error=str(st.outcome.exception())
        ),
    )
    try:
        remote = retrying(_upload_once, s, files)
    except UploadFailed:
        metrics.SFTP_UPLOADS.labels(outcome="failed").inc()
        raise
    metrics.SFTP_UPLOADS.labels(outcome="succeeded").inc()
    return remote
