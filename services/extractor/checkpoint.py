"""The run checkpoint in Redis: which run is in progress, where its next page starts, which user ids it handed on."""

from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime
from typing import Any

import orjson
import redis
from redis.typing import EncodableT, FieldT

from etl_common.clock import STAMP_FORMAT
from etl_common.runs import is_user_id
from etl_common.streams import text
from extractor.errors import CheckpointUnreadable

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
        """The checkpoint stored in hash ``key``; None when no run is in progress; CheckpointUnreadable when the
        hash is not one this version wrote (a field missing, unknown or of the wrong shape)."""
        raw = client.hgetall(key)
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        known = {f.name: f for f in fields(cls)}
        problems = [f"unknown field {name!r}" for name in data if name not in known]
        kwargs: dict[str, object] = {}
        for name, f in known.items():
            value = data.get(name)
            if value is None:
                if f.default is MISSING:
                    problems.append(f"field {name!r} missing")
            elif f.type in (int, "int"):
                try:
                    kwargs[name] = int(value)
                except ValueError:
                    problems.append(f"field {name!r} is not an integer: {value[:40]!r}")
            else:
                kwargs[name] = value
        problems += [f"field {name!r} is empty" for name in _NON_EMPTY if data.get(name) == ""]
        problems += [f"field {n!r} is negative" for n in _COUNTS if isinstance(kwargs.get(n), int) and kwargs[n] < 0]  # type: ignore[operator]
        run_ts = data.get("run_ts")
        if run_ts:
            try:
                datetime.strptime(run_ts, STAMP_FORMAT)
            except ValueError:
                problems.append(f"field 'run_ts' is not a run stamp: {run_ts[:40]!r}")
        if problems:
            raise CheckpointUnreadable(key, "; ".join(problems), data.get("run_id") or "")
        return cls(**kwargs)  # type: ignore[arg-type]


# Fields a run always has (its identity) and counts that never go below zero.
_NON_EMPTY = ("run_id", "run_ts", "started_at", "raw_file")
_COUNTS = ("next_skip", "next_page", "records", "fetched", "duplicate_ids")


def user_id(user: Any) -> int | None:
    """The user's ``id`` when it identifies a user (``runs.is_user_id``, the transformer's rule); None otherwise.

    A record with a broken id (``"abc"``, ``"7"``, ``7.0``, ``true``, none) is the transformer's to reject with
    its reason: counted among the seen ids, every page holding one would look like a repeat of the source's.
    """
    uid = user.get("id") if isinstance(user, dict) else None
    return uid if is_user_id(uid) else None


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

    def split(self, users: list[Any]) -> tuple[list[int | str], list[int | str]]:
        """The ids of ``users`` seen before (in this run or earlier on the page), and the new ones, in order.

        Only ids that identify a user (``user_id``) are told apart: a record without one repeats nothing.
        """
        duplicates: list[int | str] = []
        page_ids: list[int | str] = []
        in_page: set[int | str] = set()
        for user in users:
            uid = user_id(user)
            if uid is None:
                continue  # the transformer rejects it, with its reason
            if uid in self or uid in in_page:
                duplicates.append(uid)
            else:
                in_page.add(uid)
                page_ids.append(uid)
        return duplicates, page_ids

    @staticmethod
    def line(ids: list[int | str]) -> bytes:
        """A page's ids as appended to the run's ids key (one JSON array and a newline)."""
        return orjson.dumps(ids) + b"\n"

    @classmethod
    def load(cls, client: redis.Redis, key: str) -> "SeenIds":
        """The ids stored under ``key`` by earlier hand-ons of the run (empty for a new run)."""
        seen = cls()
        stored: bytes | None = client.get(key)  # type: ignore[assignment]
        for number, line in enumerate((stored or b"").splitlines(), 1):
            try:
                ids = orjson.loads(line)
                if not isinstance(ids, list) or not all(isinstance(i, (int, str)) for i in ids):
                    raise ValueError("not a JSON array of ids")
            except ValueError as exc:
                raise CheckpointUnreadable(key, f"line {number} is not a JSON array of user ids ({exc})") from exc
            seen.update(ids)
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
