"""The age v1 file format (age-encryption.org/v1) with X25519 keys, on ``cryptography`` alone.

The subset of pyrage's interface the saver uses (``x25519.Recipient``/``Identity``, ``encrypt_io``,
``decrypt_io``), in pure Python so the Alpine images need no Rust-built wheel (pyrage has no
musllinux wheel). Files are standard age files: tests check them against pyrage and the age tool.
"""

import base64
import hmac
import os
from hashlib import sha256
from typing import BinaryIO, Protocol, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from saver import bech32

INTRO = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
_X25519_INFO = b"age-encryption.org/v1/X25519"
_MAX_LINE = 4096


class RecipientError(ValueError):
    """Not an age X25519 public key."""


class IdentityError(ValueError):
    """Not an age X25519 secret key."""


class EncryptError(Exception):
    """Encryption could not start (no recipient)."""


class DecryptError(Exception):
    """Not an age file, or not encrypted to any of the given identities (the header did not open)."""


class PayloadError(OSError):
    """The payload failed authentication: altered, truncated or extended (an OSError, as with pyrage)."""


class _Reader(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    """Canonical unpadded base64 only, as the spec demands."""
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError as exc:
        raise DecryptError("malformed base64 in the header") from exc
    if _b64(data) != text:
        raise DecryptError("non-canonical base64 in the header")
    return data


class Recipient:
    """An X25519 public key, ``age1...``."""

    def __init__(self, public: bytes) -> None:
        self.public = public

    @classmethod
    def from_str(cls, text: str) -> "Recipient":
        """Parse ``age1...`` (lower-case Bech32 of the 32-byte key); RecipientError otherwise."""
        try:
            hrp, data = bech32.decode(text)
        except ValueError as exc:
            raise RecipientError(f"invalid recipient: {exc}") from None
        if hrp != "age" or len(data) != 32 or text != text.lower():
            raise RecipientError("invalid recipient: not an age1 X25519 key")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode("age", self.public)

    def wrap(self, file_key: bytes) -> bytes:
        """The X25519 stanza for this recipient."""
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public))
        key = _hkdf(shared, share + self.public, _X25519_INFO)
        body = ChaCha20Poly1305(key).encrypt(bytes(12), file_key, None)
        return b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n"


class Identity:
    """An X25519 secret key, ``AGE-SECRET-KEY-1...``."""

    def __init__(self, secret: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(secret)
        self._secret = secret

    @classmethod
    def generate(cls) -> "Identity":
        """A new random secret key (``os.urandom``)."""
        return cls(os.urandom(32))

    @classmethod
    def from_str(cls, text: str) -> "Identity":
        """Parse ``AGE-SECRET-KEY-1...`` (upper-case Bech32 of the 32-byte key); IdentityError, naming no part of it."""
        try:
            hrp, data = bech32.decode(text)
        except ValueError:
            raise IdentityError("invalid identity") from None
        if hrp != "age-secret-key-" or len(data) != 32 or text != text.upper():
            raise IdentityError("invalid identity")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode("age-secret-key-", self._secret).upper()

    def __repr__(self) -> str:  # never print the secret
        return "<age Identity>"

    def to_public(self) -> Recipient:
        """The recipient (public key) of this identity."""
        return Recipient(self._key.public_key().public_bytes_raw())

    def unwrap(self, args: list[bytes], body: bytes) -> bytes | None:
        """The file key if this X25519 stanza is for this identity, else None."""
        if len(args) != 1:
            raise DecryptError("malformed X25519 stanza")
        share = _unb64(args[0])
        if len(share) != 32 or len(body) != 32:
            raise DecryptError("malformed X25519 stanza")
        shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        key = _hkdf(shared, share + self.to_public().public, _X25519_INFO)
        try:
            return ChaCha20Poly1305(key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None


class x25519:
    """The same spelling as ``pyrage.x25519``, so callers read the same."""

    Recipient: TypeAlias = Recipient
    Identity: TypeAlias = Identity


def _read_full(reader: _Reader, n: int) -> bytes:
    parts, left = [], n
    while left:
        got = reader.read(left)
        if not got:
            break
        parts.append(got)
        left -= len(got)
    return b"".join(parts)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt_io(reader: _Reader, writer: _Writer, recipients: list[Recipient]) -> None:
    """Encrypt everything ``reader`` yields into ``writer``, one 64 KiB chunk at a time."""
    if not recipients:
        raise EncryptError("no recipients")
    file_key = os.urandom(16)
    header = INTRO + b"".join(r.wrap(file_key) for r in recipients) + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, sha256).digest()
    nonce = os.urandom(16)
    writer.write(header + b" " + _b64(mac) + b"\n" + nonce)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunk, counter = _read_full(reader, CHUNK), 0
    while True:
        following = _read_full(reader, CHUNK) if len(chunk) == CHUNK else b""
        last = not following
        writer.write(aead.encrypt(_nonce(counter, last), chunk, None))
        if last:
            return
        chunk, counter = following, counter + 1


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE)
    if not line.endswith(b"\n"):
        raise DecryptError("not an age file (header line missing or too long)")
    return line[:-1]


def _file_key(reader: BinaryIO, identities: list[Identity]) -> bytes:
    """Parse the header, find a stanza one identity opens, check the header MAC."""
    if reader.readline(_MAX_LINE) != INTRO:
        raise DecryptError("not an age v1 file")
    header, stanzas = bytearray(INTRO), []
    while True:
        line = _line(reader)
        if line.startswith(b"---"):
            if not line.startswith(b"--- "):
                raise DecryptError("malformed header end")
            header += b"---"
            mac = _unb64(line[4:])
            break
        if not line.startswith(b"-> "):
            raise DecryptError("malformed stanza")
        header += line + b"\n"
        kind, *args = line[3:].split(b" ")
        body = b""
        while True:
            piece = _line(reader)
            header += piece + b"\n"
            body += piece
            if len(piece) < 64:
                break
        stanzas.append((kind, args, _unb64(body)))
    file_key = None
    for kind, args, body in stanzas:
        if kind == b"X25519":
            for identity in identities:
                file_key = identity.unwrap(args, body)
                if file_key is not None:
                    break
        if file_key is not None:
            break
    if file_key is None or len(file_key) != 16:
        raise DecryptError("no identity matched any of the file's recipients")
    expected = hmac.new(_hkdf(file_key, b"", b"header"), bytes(header), sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise DecryptError("header MAC mismatch: the header was altered")
    return file_key


def decrypt_io(reader: BinaryIO, writer: _Writer, identities: list[Identity]) -> None:
    """Decrypt an age file into ``writer``; raises before writing a chunk that does not authenticate."""
    file_key = _file_key(reader, identities)
    nonce = _read_full(reader, 16)
    if len(nonce) != 16:
        raise PayloadError("truncated: no payload")
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunk, counter = _read_full(reader, CHUNK + TAG), 0
    while True:
        following = _read_full(reader, CHUNK + TAG) if len(chunk) == CHUNK + TAG else b""
        last = not following
        try:
            plain = aead.decrypt(_nonce(counter, last), chunk, None)
        except InvalidTag:
            raise PayloadError(f"chunk {counter} failed authentication (altered or truncated)") from None
        if last and not plain and counter:
            raise PayloadError("empty final chunk")
        writer.write(plain)
        if last:
            return
        chunk, counter = following, counter + 1
