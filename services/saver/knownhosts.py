"""known_hosts as people keep it: usable lines trusted, the rest skipped with a warning, revoked keys never.

paramiko's own loader raises on a line it cannot parse (``@cert-authority``, ``@revoked``, bad
base64), which would stop the saver, and it knows nothing of ``@revoked``. It also takes a key blob cut short
(at a base64 boundary) for a key: every blob is checked whole here first.
"""

import base64
import binascii
import struct
from dataclasses import dataclass, field

import paramiko
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

log = structlog.get_logger(__name__)

# (path, line number, line) already warned about: the file is read at every upload try.
_warned: set[tuple[str, int, str]] = set()


@dataclass
class KnownHosts:
    """The usable entries of a known_hosts file, the revoked keys and the lines skipped (number, reason)."""

    keys: list[tuple[str, paramiko.PKey]] = field(default_factory=list)
    revoked: set[tuple[str, str]] = field(default_factory=set)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    usable: int = 0


def _key_id(key: paramiko.PKey) -> tuple[str, str]:
    return key.get_name(), key.get_base64()


def _skip(kh: KnownHosts, path: str, lineno: int, line: str, reason: str) -> None:
    kh.skipped.append((lineno, reason))
    if (path, lineno, line) not in _warned:
        _warned.add((path, lineno, line))
        log.warning("known_hosts line skipped", path=path, line=lineno, reason=reason)


def _hashed_ok(name: str) -> bool:
    """A hashed host name ``|1|salt|hash`` whose parts decode (paramiko would raise on it at connect time)."""
    parts = name.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        base64.b64decode(parts[2], validate=True)
        base64.b64decode(parts[3], validate=True)
    except binascii.Error:
        return False
    return True


def _blob_problem(key_type: str, blob_b64: str) -> str | None:
    """Why the key field is not one whole key of the line's type, or None when it is.

    The blob must decode, name ``key_type`` inside, and parse as that type's key with nothing left over
    (it re-encodes to the same bytes): a line cut at a base64 boundary decodes, but is not a key.
    """
    try:
        blob = base64.b64decode(blob_b64, validate=True)
        (size,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + size].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        return "unreadable key (not a key blob: bad base64, or cut short)"
    if inner != key_type:
        return f"unreadable key (the blob is of type {inner[:40]!r}, not the line's {key_type[:40]!r})"
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {blob_b64}".encode())
    except UnsupportedAlgorithm:
        return None  # a type cryptography does not know: paramiko's own loader decides
    except ValueError:
        return f"unreadable key (the {key_type} blob is cut short or corrupt)"
    whole = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    if base64.b64decode(whole) != blob:
        return f"unreadable key (the {key_type} blob has bytes beyond the key)"
    return None


def parse(text: str, path: str) -> KnownHosts:
    """Every entry of ``text`` (a known_hosts file's content) that can be used; never raises on a line."""
    kh = KnownHosts()
    entries: list[HostKeyEntry] = []
    # A byte-order mark (files saved by some Windows editors) would become part of the first host name.
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = line.split(None, 1)[0] if line.startswith("@") else None
        if marker == "@cert-authority":
            _skip(kh, path, lineno, line, "@cert-authority lines (host certificates) are not supported")
            continue
        if marker not in (None, "@revoked"):
            _skip(kh, path, lineno, line, f"unknown marker {marker[:40]!r}")
            continue
        body = line.split(None, 1)[1] if marker and len(line.split(None, 1)) > 1 else line
        fields = body.split()
        problem = _blob_problem(fields[1], fields[2]) if len(fields) >= 3 else None
        if problem:
            _skip(kh, path, lineno, line, problem)
            continue
        try:
            entry = HostKeyEntry.from_line(" ".join(body.split()), lineno)
        except (InvalidHostKey, paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
            _skip(kh, path, lineno, line, f"unreadable key ({type(exc).__name__})")
            continue
        if entry is None or entry.key is None:
            _skip(kh, path, lineno, line, "unknown key type or too few fields")
            continue
        if marker == "@revoked":
            kh.revoked.add(_key_id(entry.key))
            continue
        bad = [n for n in entry.hostnames if n.startswith("|") and not _hashed_ok(n)]
        if bad:
            _skip(kh, path, lineno, line, "hashed host name is malformed")
            continue
        entries.append(entry)
    for entry in entries:
        if _key_id(entry.key) in kh.revoked:
            continue  # a revoked key is never trusted, whatever line lists it
        kh.usable += 1
        for name in entry.hostnames:
            kh.keys.append((name, entry.key))
    return kh


def pin(client: paramiko.SSHClient, kh: KnownHosts) -> None:
    """Make ``kh``'s keys the client's trusted host keys, and its policy refuse every other key."""
    trusted = client.get_host_keys()
    for name, key in kh.keys:
        trusted.add(name, key.get_name(), key)
    client.set_missing_host_key_policy(RejectUnknown(kh.revoked))


class RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse every host key not pinned (paramiko's RejectPolicy), saying so when the key is a revoked one."""

    def __init__(self, revoked: set[tuple[str, str]]) -> None:
        self.revoked = revoked

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        """Called by paramiko for a key it does not trust: always raise SSHException, naming a revoked key."""
        if _key_id(key) in self.revoked:
            raise paramiko.SSHException(f"host key of {hostname} is marked @revoked in known_hosts")
        raise paramiko.SSHException(f"Server {hostname!r} not found in known_hosts")
