"""The transformer loop: read raw pages as the 'transformer' group, hand processed pages on, announce phase 2."""

import time
from operator import is_
from typing import Any

import orjson
import redis
import structlog
from opentelemetry import trace

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

# Hands a raw entry on in one command (atomic, as a transaction is): the processed page (when there is one,
# ARGV[3]) is added, the raw entry acked and deleted, the page's counts (or the run's page count) recorded and,
# once every page of the run is in and only once, phase 2 published on the channel and the events stream. An
# entry no longer pending (another consumer that claimed it handed it on first) is left alone: nothing doubles.
_HAND_ON = """
if #redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
if ARGV[3] ~= '' then
  if ARGV[4] ~= '' then redis.call('XADD', KEYS[1], '*', 'data', ARGV[3], 'traceparent', ARGV[4])
  else redis.call('XADD', KEYS[1], '*', 'data', ARGV[3]) end
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[2], ARGV[2])
if ARGV[5] == 'page' then redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
else redis.call('HSET', KEYS[4], 'expected', ARGV[6]) end
redis.call('EXPIRE', KEYS[3], ARGV[8]); redis.call('EXPIRE', KEYS[4], ARGV[8])
local expected = tonumber(redis.call('HGET', KEYS[4], 'expected'))
if not expected or redis.call('HLEN', KEYS[3]) < expected then return 1 end
if redis.call('HSETNX', KEYS[4], 'phase2', '1') == 0 then return 1 end
local valid, invalid = 0, 0
for _, c in ipairs(redis.call('HVALS', KEYS[3])) do
  local v, i = string.match(c, '(%d+),(%d+)')
  valid = valid + tonumber(v); invalid = invalid + tonumber(i)
end
local payload = {run_id=ARGV[10], raw_file=ARGV[11], processed_file=ARGV[12], dlq_file=ARGV[13],
                 valid_count=valid, invalid_count=invalid}
redis.call('PUBLISH', ARGV[9], cjson.encode(payload))
payload['type'] = 'phase2_complete'
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '100000', '*', 'data', cjson.encode(payload), 'traceparent', ARGV[4])
return 2
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
        self._script = client.register_script(_HAND_ON)

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
            # The records' text is kept: a page whose records go on as they came is not encoded again.
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
            # Output, ack and tally in one atomic command: a crash repeats the page or nothing.
            self._hand_on(entry, payload, "page", page, f"{n_valid},{n_invalid}", streams.dumps(processed))
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
            self._hand_on(entry, payload, "end", int(payload["pages"]), "", b"")

    def _hand_on(
        self, entry: streams.Entry, payload: dict[str, Any], mode: str, number: int, counts: str, data: bytes
    ) -> None:
        """``_HAND_ON`` for ``entry``: ``data`` (a processed page's JSON, or empty) out, the entry acked, the tally."""
        run_id = str(payload["run_id"])
        raw_file, processed_file, dlq_file = _names(str(payload["run_ts"]))
        # EVALSHA of the registered script: one command and one reply, the body sent only if Redis lacks it.
        self._script(
            keys=[
                self.keys.processed_stream,
                entry.stream,
                self.keys.run_pages(run_id),
                self.keys.run_meta(run_id),
                self.keys.events_stream,
            ],
            args=[
                self.reader.group,
                entry.id,
                data,
                tracing.current_traceparent() or "",
                mode,
                number,
                counts,
                self.settings.run_state_ttl_s,
                CHANNEL_PHASE2,
                run_id,
                raw_file,
                processed_file,
                dlq_file,
            ],
        )
