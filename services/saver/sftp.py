"""SFTP upload: key authentication, pinned host key, temporary name then rename, size check, retries."""

import io
import posixpath
from pathlib import Path

import paramiko
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from tenacity import (
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from etl_common import metrics, retry
from etl_common.errors import TransientError
from saver import knownhosts, sftpwatch
from saver.settings import SaverSettings

log = structlog.get_logger(__name__)


# Suffixes of the remote temporary files: the whole-file upload's, and the one written as pages commit (apart, so
# a stream given up on can never rename over a whole-file upload of the same run).
PART = ".part"
STREAM_PART = ".stream.part"


class UploadFailed(TransientError):
    """The files could not be uploaded now; the run stays upload_pending and is retried."""


class UploadRefused(UploadFailed):
    """A key or trust problem (wrong passphrase, refused key, unknown or changed host key): not retried at once."""


class UploadStalled(UploadFailed):
    """The server stopped answering for ETL_SFTP_TIMEOUT_S: not retried at once, so the run shows it after one wait."""


_KEY_CLASSES = (
    (rsa.RSAPrivateKey, paramiko.RSAKey),
    (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
    (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
)


def load_key(data: bytes, passphrase: str | None, origin: str) -> paramiko.PKey:
    """The client key (ed25519, ECDSA or RSA; OpenSSH or PEM), decrypted with its passphrase when it has one.

    Messages name ``origin`` (a path or a variable name), never the key or the passphrase.
    """
    password = passphrase.encode() if passphrase else None
    openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----" in data
    try:
        loader = serialization.load_ssh_private_key if openssh else serialization.load_pem_private_key
        parsed = loader(data, password=password)
    except TypeError:
        if password is None:
            raise UploadRefused(
                f"SFTP key {origin} is protected by a passphrase; set ETL_SFTP_KEY_PASSPHRASE"
            ) from None
        raise UploadRefused(f"ETL_SFTP_KEY_PASSPHRASE is set but SFTP key {origin} has no passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        if password is not None:
            raise UploadRefused(
                f"SFTP key {origin}: wrong passphrase (ETL_SFTP_KEY_PASSPHRASE), or a corrupt key"
            ) from None
        raise UploadRefused(f"SFTP key {origin} is not a private key in OpenSSH or PEM format") from None
    for crypto_class, key_class in _KEY_CLASSES:
        if isinstance(parsed, crypto_class):
            try:
                return key_class.from_private_key(io.StringIO(data.decode("ascii")), password=passphrase or None)
            except (paramiko.SSHException, ValueError, UnicodeDecodeError):
                raise UploadRefused(f"SFTP key {origin} could not be loaded") from None
    raise UploadRefused(f"SFTP key {origin} is of an unsupported type (use ed25519, ECDSA or RSA)")


def _client_key(s: SaverSettings) -> paramiko.PKey:
    passphrase = s.sftp_key_passphrase.get_secret_value() if s.sftp_key_passphrase else None
    if s.sftp_key is not None and s.sftp_key.get_secret_value().strip():
        # A key handed over as a variable often loses its final new line; PEM parsers want it.
        text = s.sftp_key.get_secret_value().strip() + "\n"
        return load_key(text.encode(), passphrase, "ETL_SFTP_KEY")
    try:
        # Read at every attempt: replacing the key file fixes a pending upload without a restart.
        data = Path(s.sftp_key_path).read_bytes()
    except OSError as exc:
        raise UploadRefused(f"SFTP key {s.sftp_key_path} is unreadable: {exc.strerror}") from None
    return load_key(data, passphrase, s.sftp_key_path)


def connect(s: SaverSettings) -> paramiko.SSHClient:
    """An SSH session with ``s``'s server, its host key checked against the pinned known_hosts; UploadFailed."""
    key = _client_key(s)
    try:
        with open(s.sftp_known_hosts, encoding="utf-8", errors="replace") as fh:
            pinned = knownhosts.parse(fh.read(), s.sftp_known_hosts)
    except OSError as exc:
        raise UploadRefused(f"known_hosts {s.sftp_known_hosts} is unreadable: {exc.strerror}") from exc
    # A file whose only keys are revoked goes on to the handshake: the refusal then names the revoked key.
    if not pinned.usable and not pinned.revoked:
        lines = ", ".join(f"line {n}: {why}" for n, why in pinned.skipped[:5]) or "no host key lines"
        raise UploadRefused(f"known_hosts {s.sftp_known_hosts} has no usable host key ({lines})")
    client = paramiko.SSHClient()
    # Never trust an unknown host key: the pinned known_hosts is the only source of trust.
    knownhosts.pin(client, pinned)
    where = f"{s.sftp_host}:{s.sftp_port}"
    try:
        client.connect(
            s.sftp_host,
            port=s.sftp_port,
            username=s.sftp_user,
            pkey=key,
            timeout=s.sftp_timeout_s,
            banner_timeout=s.sftp_timeout_s,
            auth_timeout=s.sftp_timeout_s,
            # Opening a channel (the SFTP session) waits an hour by default.
            channel_timeout=s.sftp_timeout_s,
            look_for_keys=False,
            allow_agent=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise UploadRefused(
            f"SFTP host key of {where} ({exc.key.get_name()} {exc.key.fingerprint}) does not match known_hosts "
            f"{s.sftp_known_hosts}: refusing to connect (server re-keyed, or someone in between)"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise UploadRefused(
            f"SFTP server {where} refused the key of user {s.sftp_user!r} "
            "(is its public key in the server's authorized keys?)"
        ) from None
    except paramiko.SSHException as exc:
        client.close()
        msg = str(exc)
        if "@revoked" in msg:
            raise UploadRefused(f"SFTP host {where}: {msg} ({s.sftp_known_hosts}); refusing to connect") from None
        if "not found in known_hosts" in msg:
            raise UploadRefused(
                f"SFTP host {where} is not in known_hosts {s.sftp_known_hosts}: refusing an unknown host key"
            ) from None
        raise UploadFailed(f"SFTP session with {where} failed: {msg}") from exc
    except OSError as exc:
        client.close()
        raise UploadFailed(f"SFTP server {where} unreachable: {exc}") from exc
    transport = client.get_transport()
    if transport is not None:
        # Keeps a connection idle between a run's pages (the streamed upload) open through NAT and firewalls.
        transport.set_keepalive(max(1, int(s.sftp_timeout_s)))
    return client


def mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """Create the remote folder ``path`` and its parents where missing."""
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


def replace(sftp: paramiko.SFTPClient, tmp: str, target: str) -> None:
    """Rename ``tmp`` over ``target``: atomically (posix-rename) where the server offers it, else a plain rename.

    A server may refuse the ``posix-rename@openssh.com`` extension (``internal-sftp -P posix-rename``); a plain
    SFTP rename fails on an existing target, so the target is removed first (a reader may then miss the file for
    a moment; it never sees a partial one).
    """
    try:
        sftp.posix_rename(tmp, target)
        return
    except OSError as exc:
        refused = exc
    try:
        sftp.stat(target)
        sftp.remove(target)
    except FileNotFoundError:
        pass
    try:
        sftp.rename(tmp, target)
    except OSError as exc:
        raise OSError(f"renaming {tmp} to {target} failed (posix-rename: {refused}; rename: {exc})") from exc
    log.info("sftp server refused posix-rename; used a plain rename", target=target, error=str(refused))


def remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    """Remove ``path`` on the server if it is there; a dead session is ignored (the next upload tries again)."""
    try:
        sftp.remove(path)
    except (OSError, paramiko.SSHException, EOFError):
        pass


def _upload_once(s: SaverSettings, files: dict[str, tuple[Path, str]]) -> dict[str, str]:
    # Every call on the server below is bounded by the watchdog: a server that stops answering ends the try.
    watch = sftpwatch.Watchdog(connect(s), s.sftp_timeout_s, f"{s.sftp_host}:{s.sftp_port}")
    tmp = ""
    sftp: paramiko.SFTPClient | None = None
    try:
        with watch.doing("opening the SFTP session"):
            sftp = watch.bound(watch.client.open_sftp())
        remote: dict[str, str] = {}
        for kind, (local, name) in files.items():
            target = posixpath.join(s.sftp_remote_dir, name)
            with watch.doing(f"creating the folder of {target}"):
                mkdirs(sftp, posixpath.dirname(target))
            tmp = target + PART
            size = local.stat().st_size
            with watch.doing(f"writing {tmp}"):
                # confirm=True stats the upload and fails on a size mismatch; each chunk sent is progress.
                sftp.put(str(local), tmp, callback=watch.progress, confirm=True)
            with watch.doing(f"renaming {tmp} to {target}"):
                replace(sftp, tmp, target)
            tmp = ""
            with watch.doing(f"checking the size of {target}"):
                if sftp.stat(target).st_size != size:
                    raise UploadFailed(f"size of {target} on the server differs from the local file")
                # What a streamed upload given up on (or a saver killed mid-stream) left beside the file.
                remove_quietly(sftp, target + STREAM_PART)
            metrics.SFTP_BYTES.inc(size)
            remote[kind] = target
        return remote
    except (OSError, EOFError, paramiko.SSHException) as exc:
        if watch.stalled:
            # The temporary file stays on the server (never under the final name); the next try overwrites it.
            raise UploadStalled(watch.message()) from exc
        if sftp is not None and tmp:
            with watch.doing(f"removing {tmp}"):
                remove_quietly(sftp, tmp)
        raise UploadFailed(f"SFTP transfer failed: {exc}") from exc
    finally:
        watch.close()


def upload(s: SaverSettings, files: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """Upload ``kind -> (local path, remote name)``; retried with backoff, UploadFailed when all tries fail."""
    retrying = retry.retrying(
        stop=stop_after_attempt(s.sftp_attempts),
        wait=wait_exponential(multiplier=s.sftp_backoff_s, max=60),
        # A key or trust problem, or a server that stopped answering, will not mend in seconds: leave it to the
        # run's own retry (upload_pending, with the reason) rather than hold the run silent for more timeouts.
        retry=retry_if_exception_type(UploadFailed) & retry_if_not_exception_type((UploadRefused, UploadStalled)),
        reraise=True,
        before_sleep=lambda st: log.warning(
            "sftp upload failed, retrying",
            attempt=st.attempt_number,
            error=str(st.outcome.exception()) if st.outcome else "",
        ),
    )
    try:
        remote = retrying(_upload_once, s, files)
    except UploadFailed:
        metrics.SFTP_UPLOADS.labels(outcome="failed").inc()
        raise
    metrics.SFTP_UPLOADS.labels(outcome="succeeded").inc()
    return remote
