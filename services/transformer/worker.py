"""The transformer loop: read raw pages as the 'transformer' group, hand processed pages on, announce phase 2."""

import time
from operator import is_
from typing import Any

import orjson
import redis
import structlog
from opentelemetry import trace
from redis.client import Pipeline

from etl_common import metrics, pii, streams, tracing
from etl_common.errors import PermanentError
from etl_common.files import file_names
from etl_common.keys import CHANNEL_PHASE2, GROUP_TRANSFORMER
from etl_common.ops import Heartbeat
from etl_common.redis_client import RETRYABLE_ERRORS
from etl_common.runtime import Stopper, serve_loop
from etl_common.worker import StreamWorker
from transformer.contract import Contract
from transformer.settings import TransformerSettings
from transformer.transform import transform_page

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("transformer")

# Records a page's counts (or the run's page count) and, once every page of the run is in and
# only once, publishes phase 2 on the channel and the events stream. Atomic, so replicas and
# redeliveries cannot double it.
_COMPLETE = """
if ARGV[1] == 'page' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else redis.call('HSET', KEYS[2], 'expected', ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[4]); redis.call('EXPIRE', KEYS[2], ARGV[4])
local expected = tonumber(redis.call('HGET', KEYS[2], 'expected'))
if not expected or redis.call('HLEN', KEYS[1]) < expected then return 0 end
if redis.call('HSETNX', KEYS[2], 'phase2', '1') == 0 then return 0 end
local valid, invalid = 0, 0
for _, c in ipairs(redis.call('HVALS', KEYS[1])) do
  local v, i = string.match(c, '(%d+),(%d+)')
  valid = valid + tonumber(v); invalid = invalid + tonumber(i)
end
local payload = {run_id=ARGV[6], raw_file=ARGV[7], processed_file=ARGV[8], dlq_file=ARGV[9],
                 valid_count=valid, invalid_count=invalid}
redis.call('PUBLISH', ARGV[5], cjson.encode(payload))
payload['type'] = 'phase2_complete'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', 'data', cjson.encode(payload), 'traceparent', ARGV[10])
return 1
"""


def _names(run_ts: str) -> tuple[str, str, str]:
    n = file_names(run_ts)
    return n["raw_file"], n["processed_file"], n["dlq_file"]


def _as_they_came(out: dict[str, Any], records: list[Any]) -> bool:
    """Whether the page's raw copies are the records it was given, unchanged (none protected anew, quarantined
    or with values discarded by the contract), so their text in the raw entry is theirs."""
    raw = out["raw"]
    return (
        len(raw) == len(records)
        and all(map(is_, raw, records))
        and not out["schema"].get("contract", {}).get("discarded")
    )


class Worker(StreamWorker[TransformerSettings]):
    """Consumes the raw stream until stopped."""

    def __init__(
        self,
        settings: TransformerSettings,
        client: redis.Redis,
        departments: dict[str, str],
        heartbeat: Heartbeat,
        stopper: Stopper,
        contract: Contract | None = None,
    ) -> None:
        super().__init__(settings, client, heartbeat, stopper, GROUP_TRANSFORMER, lambda keys: [keys.raw_stream])
        self.departments = departments
        self.contract = contract

    def serve(self) -> None:
        """Create the group, then handle raw pages until SIGTERM (a Redis outage is waited out)."""
        self.reader.setup()
        log.info("transformer ready", consumer=self.reader.consumer)
        serve_loop(self.turn, self.reader.setup, self.heartbeat, self.stopper)
        log.info("transformer stopped")

    def turn(self) -> None:
        """Read and handle up to ``batch_pages`` entries (blocks up to ``block_ms`` when there are none)."""
        for entry in self.reader.read(self.settings.batch_pages):
            self.handle(entry)
            self.heartbeat.beat()

    def handle(self, entry: streams.Entry) -> None:
        """Process one entry; only what cannot succeed is dead-lettered, the rest stays pending."""
        if self.reader.too_many_deliveries(entry):
            self._dead(entry, f"delivered {entry.deliveries} times without success")
            return
        try:
            # The records' text is kept: records that go on as they came are not encoded again.
            payload, tp, records_text = streams.decode_keeping(entry.fields, "records")
            kind = payload.get("kind")
            if kind == "page":
                self._page(entry, payload, tp, records_text)
            elif kind == "end":
                self._end(entry, payload, tp)
            else:
                raise PermanentError(f"unknown entry kind {kind!r}")
        except PermanentError as exc:
            self._dead(entry, str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            self._dead(entry, f"malformed entry: {type(exc).__name__}: {exc}")
        except RETRYABLE_ERRORS:
            raise
        except Exception as exc:
            # A bug: keep the entry pending; it is reclaimed later and dead-lettered after max deliveries.
            metrics.ERRORS.labels(stage="transform").inc()
            log.exception("unexpected error; entry left pending", entry_id=entry.id)
            self._report(entry, "run_error", f"transform: unexpected error: {type(exc).__name__}: {exc}")

    def _dead(self, entry: streams.Entry, reason: str) -> None:
        """Dead-letter the entry; the run it belongs to cannot complete without it, so it is failed with the reason."""
        self.reader.dead_letter(entry, reason)
        self._report(entry, "run_failed", f"transform: a raw-stream entry was dead-lettered: {reason}")

    def _report(self, entry: streams.Entry, kind: str, error: str) -> None:
        """A run_error (recorded, the run goes on) or run_failed event for the saver to record on the run."""
        run_id = streams.run_id_of(entry.fields)
        if not run_id:
            return
        event = {"type": kind, "run_id": run_id, "stage": "transform", "error": error[:2000]}
        fields: dict[Any, Any] = streams.encode(event, tracing.current_traceparent())
        self.client.xadd(self.keys.events_stream, fields, maxlen=100_000, approximate=True)

    def _page(self, entry: streams.Entry, payload: dict[str, Any], tp: str | None, records_text: bytes | None) -> None:
        run_id, page, records = str(payload["run_id"]), int(payload["page"]), payload["records"]
        if not isinstance(records, list):
            raise PermanentError("'records' is not a list")
        t0 = time.monotonic()
        with tracer.start_as_current_span(
            "transform.page", context=tracing.context_from(tp), attributes={"etl.run_id": run_id, "etl.page": page}
        ) as span:
            out = transform_page(
                records,
                self.departments,
                self.settings.pii_policy,
                self.settings.unknown_department == "reject",
                self.contract,
                # A page the extractor protected with this very policy is not protected again; any other is.
                protected=payload.get(pii.MARK) == self.settings.pii_policy,
                # JSON text spells U+0000 only as this escape: a page without it has no record to search.
                may_hold_nul=None if records_text is None else b"\\u0000" in records_text,
            )
            processed = {
                "kind": "page",
                "run_id": run_id,
                "run_ts": payload["run_ts"],
                "page": page,
                "skip": payload.get("skip", 0),
                "total": payload.get("total"),
                **out,
            }
            if records_text is not None and _as_they_came(out, records):
                processed["raw"] = orjson.Fragment(records_text)  # the entry's own text of the very same records
            n_valid, n_invalid = len(out["valid"]), len(out["invalid"])
            pipe = self.client.pipeline(transaction=True)
            # Output, ack and tally in one transaction: a crash repeats the page or nothing.
            pipe.xadd(self.keys.processed_stream, streams.encode(processed, tracing.current_traceparent()))
            pipe.xack(entry.stream, self.reader.group, entry.id)
            pipe.xdel(entry.stream, entry.id)
            self._tally(pipe, payload, "page", page, f"{n_valid},{n_invalid}")
            pipe.execute()
        metrics.PAGES.labels(stage="transform", outcome="ok").inc()
        metrics.RECORDS.labels(stage="transform", outcome="valid").inc(n_valid)
        metrics.RECORDS.labels(stage="transform", outcome="invalid").inc(n_invalid)
        metrics.PAGE_DURATION.labels(stage="transform").observe(time.monotonic() - t0)
        if checked := out["schema"].get("contract"):
            metrics.CONTRACT_VIOLATIONS.labels(policy=checked["policy"]).inc(checked["records"])
        log.info(
            "page transformed",
            run_id=run_id,
            page=page,
            valid=n_valid,
            invalid=n_invalid,
            outcome="ok",
            duration_ms=round((time.monotonic() - t0) * 1000, 2),
            trace_id=tracing.trace_id_hex(span),
        )

    def _end(self, entry: streams.Entry, payload: dict[str, Any], tp: str | None) -> None:
        with tracer.start_as_current_span("transform.end", context=tracing.context_from(tp)):
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(entry.stream, self.reader.group, entry.id)
            pipe.xdel(entry.stream, entry.id)
            self._tally(pipe, payload, "end", int(payload["pages"]), "")
            pipe.execute()

    def _tally(self, pipe: Pipeline, payload: dict[str, Any], mode: str, number: int, counts: str) -> None:
        run_id = str(payload["run_id"])
        raw_file, processed_file, dlq_file = _names(str(payload["run_ts"]))
        # EVAL with the body inside the transaction (Redis caches the compiled script): redis-py sends a
        # registered script's SCRIPT EXISTS as a round trip of its own before every transaction that uses it.
        pipe.eval(
            _COMPLETE,
            3,
            self.keys.run_pages(run_id),
            self.keys.run_meta(run_id),
            self.keys.events_stream,
            mode,
            number,
            counts,
            self.settings.run_state_ttl_s,
            CHANNEL_PHASE2,
            run_id,
            raw_file,
            processed_file,
            dlq_file,
            tracing.current_traceparent() or "",
        )
