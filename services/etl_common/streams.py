"""Stream entries (encode/decode with trace context) and a consumer-group reader with claim and dead-letter."""

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import structlog
from redis.typing import EncodableT, FieldT

from etl_common import metrics
from etl_common.errors import PermanentError
from etl_common.keys import Keys
from etl_common.settings import BaseEtlSettings

log = structlog.get_logger(__name__)


def encode(payload: dict[str, Any], traceparent: str | None = None) -> dict[FieldT, EncodableT]:
    """The fields of a stream entry: the payload as JSON (``orjson.Fragment`` values go in as they are) and the
    W3C trace context."""
    fields: dict[FieldT, EncodableT] = {"data": orjson.dumps(payload)}
    if traceparent:
        fields["traceparent"] = traceparent.encode()
    return fields


def decode(fields: dict[bytes, bytes] | None) -> tuple[dict[str, Any], str | None]:
    """Payload and trace context of an entry; PermanentError when it is not ours."""
    if not fields:
        raise PermanentError("entry was deleted while pending")
    raw = fields.get(b"data")
    if raw is None:
        raise PermanentError("entry has no 'data' field")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(f"entry data is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PermanentError("entry data is not a JSON object")
    tp = fields.get(b"traceparent")
    return payload, tp.decode() if tp else None


def decode_keeping(fields: dict[bytes, bytes] | None, key: str) -> tuple[dict[str, Any], str | None, bytes | None]:
    """``decode``, and the JSON text of the payload's array ``key`` as the entry holds it (None when not cut out).

    The text lets a service hand the array on without encoding it again (``orjson.Fragment``). It is cut out
    only when the rest of the entry is exactly what ``dumps`` writes for the payload's other members (so the
    cut is at that top-level member, nothing repeats the key) and the text is one JSON array, read here once
    in place of the whole entry; any other entry is decoded whole and gets None.
    """
    raw = fields.get(b"data") if fields else None
    if type(raw) is bytes:
        marker = b'"' + key.encode() + b'":'
        start = raw.find(marker) + len(marker)
        end = raw.rfind(b"]") + 1
        if len(marker) <= start < end and raw[start : start + 1] == b"[":
            cut = _cut(raw, start, end, key)
            if cut is not None:
                tp = fields.get(b"traceparent") if fields else None
                return cut, tp.decode() if tp else None, raw[start:end]
    payload, tp_text = decode(fields)
    return payload, tp_text, None


def _cut(raw: bytes, start: int, end: int, key: str) -> dict[str, Any] | None:
    """The payload of ``raw`` with ``key``'s value read from ``raw[start:end]``, when that is exactly its text."""
    try:
        payload = orjson.loads(raw[:start] + b"null" + raw[end:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or key not in payload or payload[key] is not None:
        return None
    names = list(payload)
    at = names.index(key)
    before = {k: payload[k] for k in names[:at]}
    after = {k: payload[k] for k in names[at + 1 :]}
    head = orjson.dumps(before)[:-1] + b"," if before else b"{"
    tail = b"," + orjson.dumps(after)[1:] if after else b"}"
    # Head and tail are the canonical text of the other members: raw[start:end] is the whole value of this key.
    if raw[:start] != head + b'"' + key.encode() + b'":' or raw[end:] != tail:
        return None
    try:
        value = orjson.loads(raw[start:end])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    payload[key] = value
    return payload


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the group (and stream) if missing; only BUSYGROUP is an acceptable error."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consumer_name(configured: str) -> str:
    """This consumer's name: the configured one, else host name and pid.

    In a container the pid is 1, so a restarted pod keeps its name and re-reads its own pending
    entries; local processes get distinct names, and a dead one's entries are claimed by the others.
    """
    return configured or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Entry:
    """One delivered entry."""

    stream: str
    id: str
    fields: dict[bytes, bytes] | None
    deliveries: int = 1


@dataclass
class GroupReader:
    """Reads several streams for one group: own pending first, then new, then claims of dead consumers."""

    client: redis.Redis
    group: str
    consumer: str
    streams: list[str]
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    keys: Keys = field(default_factory=Keys)  # where dead letters and their per-run counts go
    _backlog_done: set[str] = field(default_factory=set)
    _next_claim_at: float = 0.0

    @classmethod
    def for_settings(
        cls, client: redis.Redis, group: str, streams: list[str], settings: BaseEtlSettings
    ) -> "GroupReader":
        """A reader configured from a service's settings (block, claim idle, deliveries, key prefix)."""
        return cls(
            client,
            group,
            consumer_name(settings.consumer_name),
            streams,
            block_ms=settings.block_ms,
            claim_idle_ms=settings.claim_idle_ms,
            max_deliveries=settings.max_deliveries,
            keys=Keys(settings.key_prefix),
        )

    def setup(self) -> None:
        """Create the group on every stream (BUSYGROUP accepted), drop long-idle consumers, re-read own pending."""
        for stream in self.streams:
            ensure_group(self.client, stream, self.group)
            self._forget_idle_consumers(stream)
        # After a restart our own pending entries are re-read first (id 0).
        self._backlog_done.clear()

    def _forget_idle_consumers(self, stream: str, idle_ms: int = 3_600_000) -> None:
        """Remove consumers gone for an hour with nothing pending, so the group does not grow forever."""
        for c in self.client.xinfo_consumers(stream, self.group):
            if c["pending"] == 0 and c.get("idle", 0) > idle_ms and text(c["name"]) != self.consumer:
                self.client.xgroup_delconsumer(stream, self.group, c["name"])

    def read(self, count: int) -> list[Entry]:
        """Next entries for this consumer: its own pending backlog, claimed ones, then new ones."""
        if not self._backlog_done:
            entries = self._xread("0", count, block=None)
            if entries:
                return entries
            self._backlog_done.update(self.streams)
        # Nothing can become claimable faster than the idle time: look a few times per idle period,
        # not before every read (one round trip less per page).
        now = time.monotonic()
        if now >= self._next_claim_at:
            self._next_claim_at = now + self.claim_idle_ms / 4000
            claimed = self.claim(count)
            if claimed:
                self._next_claim_at = 0.0  # more may be waiting
                return claimed
        return self._xread(">", count, block=self.block_ms)

    def _xread(self, start: str, count: int, block: int | None) -> list[Entry]:
        got: Any = self.client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(self.streams, start), count=count, block=block
        )
        entries = [
            Entry(text(stream), text(entry_id), fields) for stream, items in got or [] for entry_id, fields in items
        ]
        if start == "0":
            for stream in {e.stream for e in entries}:
                ids = [e.id for e in entries if e.stream == stream]
                counts = _delivery_counts(self.client, stream, self.group, ids)
                for e in entries:
                    if e.stream == stream:
                        e.deliveries = counts.get(e.id, 1)
        return entries

    def claim(self, count: int) -> list[Entry]:
        """Take over entries idle longer than ``claim_idle_ms`` in other consumers' pending lists."""
        claimed: list[Entry] = []
        for stream in self.streams:
            _next, items, deleted = _autoclaim(
                self.client, stream, self.group, self.consumer, self.claim_idle_ms, count
            )
            for entry_id in deleted:
                # Deleted while pending: nothing to process, drop it from the PEL.
                self.client.xack(stream, self.group, entry_id)
            if not items:
                continue
            counts = _delivery_counts(self.client, stream, self.group, [text(i) for i, _ in items])
            for entry_id, fields in items:
                eid = text(entry_id)
                claimed.append(Entry(stream, eid, fields, deliveries=counts.get(eid, 1)))
                metrics.STREAM_RECLAIMED.labels(group=self.group).inc()
            log.warning("claimed idle entries", stream=stream, group=self.group, count=len(items))
        return claimed

    def ack(self, entries: Iterable[Entry], delete: bool = True) -> None:
        """Ack (and by default delete, so consumed streams stay trimmed) in one round trip."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        if not by_stream:
            return
        pipe = self.client.pipeline(transaction=True)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
            if delete:
                pipe.xdel(stream, *ids)
        pipe.execute()

    def dead_letter(self, entry: Entry, reason: str, delete: bool = True) -> None:
        """Copy the entry with its reason to the dead-letter stream, then ack it (copy first: a crash loses nothing)."""
        fields: dict[Any, Any] = {
            "run_id": run_id_of(entry.fields),
            "stream": entry.stream,
            "id": entry.id,
            "group": self.group,
            "reason": reason[:2000],
            "deliveries": str(entry.deliveries),
        }
        for k, v in (entry.fields or {}).items():
            fields[f"f:{text(k)}"] = v
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.dead_stream, fields, maxlen=100_000, approximate=True)
        # Per-run tally for the API's run detail (the stream itself is trimmed).
        pipe.hincrby(self.keys.dead_counts, fields["run_id"] or "unknown", 1)
        pipe.xack(entry.stream, self.group, entry.id)
        if delete:
            pipe.xdel(entry.stream, entry.id)
        pipe.execute()
        metrics.STREAM_DEAD_LETTERED.labels(group=self.group).inc()
        log.error("entry dead-lettered", stream=entry.stream, entry_id=entry.id, reason=reason)

    def too_many_deliveries(self, entry: Entry) -> bool:
        """True when the entry was delivered more than ``max_deliveries`` times: dead-letter it."""
        return entry.deliveries > self.max_deliveries


def _autoclaim(
    client: redis.Redis, stream: str, group: str, consumer: str, idle_ms: int, count: int
) -> tuple[bytes | None, list[tuple[bytes, dict[bytes, bytes]]], list[bytes]]:
    try:
        res = client.xautoclaim(stream, group, consumer, min_idle_time=idle_ms, start_id="0-0", count=count)
    except redis.ResponseError as exc:
        if "NOGROUP" in str(exc):
            ensure_group(client, stream, group)
            return None, [], []
        raise
    next_id, items = res[0], res[1]
    deleted = res[2] if len(res) > 2 else []
    # Entries deleted while pending come back with no fields.
    live = [(i, f) for i, f in items if f]
    deleted = list(deleted) + [i for i, f in items if not f]
    return next_id, live, deleted


def _delivery_counts(client: redis.Redis, stream: str, group: str, ids: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.xpending_range(stream, group, min=i, max=i, count=1)
    counts: dict[str, int] = {}
    for rows in pipe.execute():
        for r in rows:
            counts[text(r["message_id"])] = int(r["times_delivered"])
    return counts


def run_id_of(fields: dict[bytes, bytes] | None) -> str:
    """The run an entry belongs to, when it can be told; empty otherwise."""
    try:
        payload, _ = decode(fields)
    except PermanentError:
        return ""
    return str(payload.get("run_id", ""))


def text(v: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return v.decode() if isinstance(v, bytes) else v
