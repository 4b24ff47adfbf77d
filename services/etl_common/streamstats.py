"""Prometheus collector: stream length, pending entries and group lag read from Redis per scrape."""

import threading
import time
from collections.abc import Iterable, Iterator

import redis
import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from etl_common import metrics
from etl_common.keys import Keys

log = structlog.get_logger(__name__)


def short_name(keys: Keys, stream: str) -> str:
    """``etl:stream:raw`` -> ``raw``: the label carries the kind of stream, never the prefix."""
    head = f"{keys.prefix}stream:"
    return stream[len(head) :] if stream.startswith(head) else stream


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class StreamCollector(Collector):
    """Queried on every scrape: figures as fresh as the scrape, no cost between scrapes."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        # Own client, short timeouts, no retries: a scrape must answer even when Redis does not.
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1)
        self.keys = keys
        self.watched: set[tuple[str, str]] = set()  # (group, stream key)
        self.lock = threading.Lock()

    def watch(self, group: str, streams: Iterable[str]) -> None:
        """Add the ``streams`` read by ``group`` (and the dead-letter stream) to those read per scrape."""
        with self.lock:
            self.watched.update((group, s) for s in streams)
            self.watched.add(("", self.keys.dead_stream))

    def describe(self) -> list[Metric]:
        """No families, so registering does not query Redis (the default REGISTRY would call ``collect``)."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``etl_redis_up`` and, when Redis answers, the ``etl_stream_*`` gauges of the watched streams."""
        up = GaugeMetricFamily("etl_redis_up", "1 when this scrape could read the streams from Redis.")
        fams = {name: GaugeMetricFamily(f"etl_stream_{name}", doc, labels=labels) for name, doc, labels in _FAMILIES}
        with self.lock:
            watched = sorted(self.watched)
        try:
            self._read(watched, fams)
        except (redis.RedisError, OSError) as exc:
            log.debug("stream statistics unavailable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from fams.values()

    def _read(self, watched: list[tuple[str, str]], fams: dict[str, GaugeMetricFamily]) -> None:
        streams = sorted({s for _, s in watched})
        groups = [(g, s) for g, s in watched if g]
        grouped = sorted({s for _, s in groups})
        pipe = self.client.pipeline(transaction=False)
        for s in streams:
            pipe.xlen(s)
        for g, s in groups:
            pipe.xpending(s, g)
        for s in grouped:
            pipe.xinfo_groups(s)
        res = pipe.execute(raise_on_error=False)
        lengths, res = res[: len(streams)], res[len(streams) :]
        summaries, infos = res[: len(groups)], res[len(groups) :]
        for s, n in zip(streams, lengths, strict=True):
            if not isinstance(n, Exception):
                fams["length_entries"].add_metric([self.short(s)], n)
        now_ms = time.time() * 1000
        for (g, s), summary in zip(groups, summaries, strict=True):
            if isinstance(summary, Exception):  # NOGROUP until the worker creates its group
                continue
            labels = [self.short(s), g]
            fams["pending_entries"].add_metric(labels, summary["pending"])
            # An entry id starts with the milliseconds at which it was added.
            first = summary.get("min")
            age_s = (now_ms - int(_s(first).split("-")[0])) / 1000 if first else 0.0
            fams["oldest_pending_age_seconds"].add_metric(labels, max(0.0, age_s))
        wanted = set(groups)
        for s, info in zip(grouped, infos, strict=True):
            if isinstance(info, Exception):
                continue
            for row in info:
                g = _s(row["name"])
                if (g, s) not in wanted:
                    continue
                labels = [self.short(s), g]
                fams["consumers"].add_metric(labels, row["consumers"])
                if row.get("lag") is not None:  # Redis cannot always tell (after deletions)
                    fams["lag_entries"].add_metric(labels, row["lag"])

    def short(self, stream: str) -> str:
        """The stream's label value (``short_name``)."""
        return short_name(self.keys, stream)


_SG = ["stream", "group"]
_FAMILIES = [
    ("length_entries", "Entries in a stream (consumed ones are deleted: the backlog).", ["stream"]),
    ("pending_entries", "Entries delivered to a group and not acknowledged yet.", _SG),
    ("lag_entries", "Entries not yet delivered to a group (XINFO GROUPS lag).", _SG),
    ("oldest_pending_age_seconds", "Age of a group's oldest pending entry (0 when none).", _SG),
    ("consumers", "Consumers known to a group.", _SG),
]

_collector: StreamCollector | None = None
_guard = threading.Lock()


def watch(redis_url: str, keys: Keys, group: str, streams: Iterable[str]) -> StreamCollector:
    """Export the streams a worker reads as ``group`` (and the dead-letter stream) on /metrics."""
    global _collector
    streams = list(streams)
    with _guard:
        if _collector is None:
            _collector = StreamCollector(redis_url, keys)
            REGISTRY.register(_collector)
        _collector.watch(group, streams)
    if group:  # present from the start, so increase() sees the first reclaim or dead letter too
        metrics.STREAM_RECLAIMED.labels(group=group)
        metrics.STREAM_DEAD_LETTERED.labels(group=group)
    return _collector


# Every series this collector can expose, for checks of dashboards and alerts.
NAMES = ["etl_redis_up", *(f"etl_stream_{name}" for name, _, _ in _FAMILIES)]
