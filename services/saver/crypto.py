"""age encryption of the run files to X25519 recipients, streamed in bounded memory; decryption and key generation."""

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

# age in pure Python (saver/agefmt.py): pyrage has no musllinux wheel for the Alpine image.
from saver import agefmt
from saver.agefmt import x25519

SUFFIX = ".age"
# age encrypts in 64 KiB chunks; reading in 1 MiB keeps calls few and memory small.
_READ_BYTES = 1 << 20


class CryptoError(Exception):
    """A key, recipient or ciphertext problem, with a message that never contains key material."""


def parse_recipients(text: str, origin: str = "ETL_ENCRYPTION_RECIPIENTS") -> list[x25519.Recipient]:
    """age public keys (``age1...``) separated by commas, spaces or new lines; ``#`` starts a comment."""
    out = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].replace(",", " ").split():
            try:
                out.append(x25519.Recipient.from_str(item))
            except agefmt.RecipientError as exc:
                # A public key is not a secret: naming it helps the operator find the typo.
                raise CryptoError(f"{origin}: {item!r} is not an age X25519 public key (age1...): {exc}") from exc
    return out


def load_recipients(inline: str, path: str) -> list[x25519.Recipient]:
    """Recipients from the inline list and from a recipients file (one per line), both optional."""
    recipients = parse_recipients(inline) if inline else []
    if path:
        try:
            recipients += parse_recipients(Path(path).read_text(encoding="utf-8"), path)
        except OSError as exc:
            raise CryptoError(f"recipients file {path} is unreadable: {exc.strerror}") from exc
    return recipients


def load_identities(path: str) -> list[x25519.Identity]:
    """The ``AGE-SECRET-KEY-1...`` lines of an age identity file (the output of ``keygen``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CryptoError(f"identity file {path} is unreadable: {getattr(exc, 'strerror', None) or exc}") from exc
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except agefmt.IdentityError:
            # Never echo the line: it may be a mistyped secret key.
            raise CryptoError(
                f"identity file {path}, line {number}: not an age secret key (AGE-SECRET-KEY-1...)"
            ) from None
    if not identities:
        raise CryptoError(f"identity file {path} holds no age secret key")
    return identities


def keygen(path: str) -> str:
    """Write a new identity file (mode 0600, never overwriting) and return its public key."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CryptoError(f"{path} already exists; not overwriting a key") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return public


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte strings, so rows can flow into the encryptor."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    # RawIOBase takes any writable buffer; BufferedReader, the only caller, passes a memoryview (as typeshed says).
    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _HashingWriter:
    """Counts and hashes what the encryptor writes, so the recorded sha256 is that of the uploaded file."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def encrypt_chunks(chunks: Iterable[bytes], out: BinaryIO, recipients: list[x25519.Recipient]) -> tuple[int, str]:
    """Encrypt a stream of plaintext pieces into ``out``; returns (ciphertext bytes, ciphertext sha256)."""
    if not recipients:
        raise CryptoError("encryption is on but no recipient is configured")
    writer = _HashingWriter(out)
    try:
        agefmt.encrypt_io(io.BufferedReader(_ChunkReader(chunks), _READ_BYTES), writer, recipients)
    except (agefmt.EncryptError, OSError) as exc:
        raise CryptoError(f"encryption failed: {exc}") from exc
    return writer.size, writer.digest.hexdigest()


def encrypt_file(src: str | Path, dst: str | Path, recipients: list[x25519.Recipient]) -> tuple[int, str]:
    """Encrypt the file ``src`` into ``dst`` (streamed); returns (ciphertext bytes, sha256)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        return encrypt_chunks(iter(lambda: fin.read(_READ_BYTES), b""), fout, recipients)


def decrypt_file(src: str | Path, dst: str | Path, identities: list[x25519.Identity]) -> int:
    """Decrypt ``src`` into ``dst``; ``dst`` appears only when the whole file authenticated. Returns its size."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".part")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            agefmt.decrypt_io(fin, fout, identities)
    except agefmt.DecryptError as exc:
        tmp.unlink(missing_ok=True)
        if "no identity matched" in str(exc):
            raise CryptoError(f"cannot decrypt {src}: not encrypted to this identity ({exc})") from exc
        # A header that is not age, or whose MAC fails (altered), is named as such.
        raise CryptoError(f"cannot decrypt {src}: {exc}") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, FileNotFoundError) and exc.filename:
            raise CryptoError(f"cannot decrypt {src}: {exc.strerror}: {exc.filename}") from exc
        # age authenticates every 64 KiB chunk and the end: any changed, missing or added byte lands here.
        raise CryptoError(
            f"cannot decrypt {src}: authentication failed, the file was altered or truncated ({exc})"
        ) from exc
    tmp.replace(dst)
    return dst.stat().st_size
