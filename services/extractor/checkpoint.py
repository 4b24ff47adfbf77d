"""The run checkpoint in Redis: which run is in progress, where its next page starts, which user ids it handed on."""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson
import redis
from redis.typing import EncodableT, FieldT

from etl_common.streams import text

# Integer ids below this live in a bitmap (16 MB at most); any other id in a set.
_BITMAP_IDS = 1 << 27


@dataclass
class Checkpoint:
    """State of an unfinished run; advanced in the same transaction that hands a page on."""

    run_id: str
    run_ts: str
    started_at: str
    trigger: str
    raw_file: str
    next_skip: int = 0
    next_page: int = 0
    records: int = 0
    total: int = -1
    traceparent: str = ""
    # The total the source announced on the run's first page: the caps are relative to it.
    first_total: int = -1
    # Users the source answered, duplicates included (``records`` counts those handed on).
    fetched: int = 0
    # User ids fetched again so far and the pages they came on (comma-separated, the first 20).
    duplicate_ids: int = 0
    duplicate_pages: str = ""
    total_change_warned: int = 0

    def mapping(self) -> dict[FieldT, EncodableT]:
        """The fields as the Redis hash stores them (every value as text)."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def load(cls, client: redis.Redis, key: str) -> "Checkpoint | None":
        """The checkpoint stored in hash ``key``; None when no run is in progress."""
        raw = client.hgetall(key)
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            if f.name in data:
                kwargs[f.name] = int(data[f.name]) if f.type in (int, "int") else data[f.name]
        return cls(**kwargs)  # type: ignore[arg-type]


def user_id(user: Any) -> int | str | None:
    """The user's ``id`` when it can identify a user (an integer or a non-empty string); None otherwise."""
    uid = user.get("id") if isinstance(user, dict) else None
    if isinstance(uid, int) and not isinstance(uid, bool):
        return uid
    if isinstance(uid, str) and uid:
        return uid
    return None


class SeenIds:
    """The user ids a run has handed on: a bitmap for small non-negative integers (1M ids: 125 KB), a set otherwise."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.other: set[int | str] = set()

    def __contains__(self, uid: int | str) -> bool:
        if isinstance(uid, int) and 0 <= uid < _BITMAP_IDS:
            i = uid >> 3
            return i < len(self.bits) and bool(self.bits[i] >> (uid & 7) & 1)
        return uid in self.other

    def add(self, uid: int | str) -> None:
        """Remember ``uid``."""
        if isinstance(uid, int) and 0 <= uid < _BITMAP_IDS:
            i = uid >> 3
            if i >= len(self.bits):
                self.bits.extend(bytes(max(i + 1 - len(self.bits), len(self.bits))))
            self.bits[i] |= 1 << (uid & 7)
        else:
            self.other.add(uid)

    def update(self, ids: Iterable[int | str]) -> None:
        """Remember every id of ``ids``."""
        for uid in ids:
            self.add(uid)

    @staticmethod
    def line(ids: list[int | str]) -> bytes:
        """A page's ids as appended to the run's ids key (one JSON array and a newline)."""
        return orjson.dumps(ids) + b"\n"

    @classmethod
    def load(cls, client: redis.Redis, key: str) -> "SeenIds":
        """The ids stored under ``key`` by earlier hand-ons of the run (empty for a new run)."""
        seen = cls()
        stored = client.get(key)
        for line in (stored or b"").splitlines():
            seen.update(orjson.loads(line))
        return seen


def id_ranges(ids: list[int | str], limit: int = 5) -> str:
    """Ids as short text: runs of consecutive integers as ``a-b``, at most ``limit`` parts, then ``...``."""
    parts: list[str] = []
    ints = sorted({i for i in ids if isinstance(i, int)})
    start = prev = None
    for i in ints:
        if start is not None and prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    parts += [repr(i) for i in ids if not isinstance(i, int)]
    return ", ".join(parts[:limit]) + (", ..." if len(parts) > limit else "")
