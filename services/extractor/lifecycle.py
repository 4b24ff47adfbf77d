"""One extraction run as Redis records it: started or resumed, pages handed on, warned, failed, finished.

Each step is one fenced write (extractor.lease): the run's stream entries, events and checkpoint move together.
"""

import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import redis
from redis.typing import EncodableT, FieldT

from etl_common import streams, tracing
from etl_common.clock import STAMP_FORMAT, utc_iso
from etl_common.files import file_names
from etl_common.keys import CHANNEL_PHASE1, Keys, run_claim
from extractor.checkpoint import Checkpoint, SeenIds
from extractor.lease import Command, Lease

# The events stream keeps the recent past only (trimmed approximately, which is cheap).
EVENTS_MAXLEN = 100_000


def xadd(key: str, fields: dict[FieldT, EncodableT], maxlen: int | None = None) -> Command:
    """XADD of a stream entry with ``fields`` (trimmed to about ``maxlen`` entries when given)."""
    trim: list[EncodableT] = ["MAXLEN", "~", maxlen] if maxlen else []
    return ["XADD", key, *trim, "*", *[word for pair in fields.items() for word in pair]]


def hset(key: str, mapping: dict[FieldT, EncodableT]) -> Command:
    """HSET of every field of ``mapping``."""
    return ["HSET", key, *[word for pair in mapping.items() for word in pair]]


def new_checkpoint(client: redis.Redis, keys: Keys, trigger: str) -> Checkpoint:
    """A new run's checkpoint; ``Run.start`` stores it with ``last_run_ts`` and ``last_run_started``."""
    started = datetime.now(timezone.utc)
    stamp = started.replace(microsecond=0)
    # File names carry a second: never reuse the previous run's. Only the names move; started_at stays true.
    last = client.get(f"{keys.prefix}last_run_ts")
    if last:
        prev = datetime.strptime(streams.text(last), STAMP_FORMAT).replace(tzinfo=timezone.utc)
        stamp = max(stamp, prev + timedelta(seconds=1))
    run_ts = stamp.strftime(STAMP_FORMAT)
    return Checkpoint(
        run_id=f"{run_ts}_{secrets.token_hex(3)}",
        run_ts=run_ts,
        started_at=utc_iso(started),
        trigger=trigger,
        raw_file=file_names(run_ts)["raw_file"],
    )


class Run:
    """The records of one run under its lease; ``cp`` is the checkpoint as the next write will store it."""

    def __init__(self, keys: Keys, lease: Lease, cp: Checkpoint, claim_ttl_s: float = 3600.0) -> None:
        self.keys, self.lease, self.cp = keys, lease, cp
        self.names = file_names(cp.run_ts)
        self.claim_ttl_ms = int(claim_ttl_s * 1000)

    def _claim(self) -> Command:
        """The run-now claim names this run (the API refuses new requests until it is at rest), for the TTL."""
        return ["SET", self.keys.run_claim, run_claim(self.cp.run_id), "PX", self.claim_ttl_ms]

    def _event(self, event: dict[str, Any], traceparent: str | None = None) -> Command:
        return xadd(self.keys.events_stream, streams.encode(event, traceparent), EVENTS_MAXLEN)

    def _warnings(self, warnings: list[str]) -> list[Command]:
        cp, tp = self.cp, tracing.current_traceparent()
        return [
            self._event({"type": "run_warning", "run_id": cp.run_id, "run_ts": cp.run_ts, "warning": w}, tp)
            for w in warnings
        ]

    def start(self) -> None:
        """Store the new run's checkpoint and announce it (no run may be in progress)."""
        cp, keys = self.cp, self.keys
        cp.traceparent = tracing.current_traceparent() or ""
        event = {
            "type": "run_started",
            "run_id": cp.run_id,
            "run_ts": cp.run_ts,
            "trigger": cp.trigger,
            "started_at": cp.started_at,
            **self.names,
        }
        commands: list[Command] = [
            self._event(event, cp.traceparent),
            ["DEL", keys.checkpoint_ids],
            hset(keys.checkpoint, cp.mapping()),
            ["SET", f"{keys.prefix}last_run_ts", cp.run_ts],
            # Run-now requests made before this moment are satisfied by this run.
            ["SET", f"{keys.prefix}last_run_started", time.time()],
            # Any run, whatever its trigger, holds the claim a queued request held.
            self._claim(),
        ]
        self.lease.write(commands, None)

    def resume(self, trigger: str) -> None:
        """Announce that the run in the checkpoint goes on."""
        event = {"type": "run_resumed", "run_id": self.cp.run_id, "trigger": trigger}
        self.lease.write([self._event(event), self._claim()], self.cp.run_id)

    def hand_on(self, entry: dict[str, Any], page_ids: list[int | str], warnings: list[str]) -> int:
        """Hand a page on with the checkpoint (already advanced past it) and its new ids; the backlog after it.

        The page, the checkpoint and the ids move together: a crash can neither lose nor repeat them.
        """
        cp, keys = self.cp, self.keys
        commands: list[Command] = [
            xadd(keys.raw_stream, streams.encode(entry, tracing.current_traceparent())),
            hset(keys.checkpoint, cp.mapping()),
        ]
        if page_ids:
            commands.append(["APPEND", keys.checkpoint_ids, SeenIds.line(page_ids)])
        commands += self._warnings(warnings)
        # The backlog for the next page's backpressure, read in the same round trip.
        commands += [["XLEN", keys.raw_stream], ["XLEN", keys.processed_stream]]
        replies = self.lease.write(commands, cp.run_id)
        return int(replies[-1]) + int(replies[-2])

    def warn(self, warnings: list[str]) -> None:
        """Record warnings about the run (events the saver keeps with it)."""
        if warnings:
            self.lease.write(self._warnings(warnings), self.cp.run_id)

    def fail(self, error: str) -> None:
        """Record the run as failed with ``error``; the checkpoint stays, so a resume retries the page."""
        event = {"type": "extract_failed", "run_id": self.cp.run_id, "error": error}
        self.lease.write([self._event(event, tracing.current_traceparent())], self.cp.run_id)

    def abort(self, error: str, warnings: list[str]) -> None:
        """Record the run as failed for good with ``error`` (and the ``warnings`` so far): the checkpoint goes."""
        cp, keys = self.cp, self.keys
        event = {"type": "run_failed", "run_id": cp.run_id, "error": error}
        commands: list[Command] = [
            *self._warnings(warnings),
            self._event(event, tracing.current_traceparent()),
            ["DEL", keys.checkpoint, keys.checkpoint_ids],
        ]
        self.lease.write(commands, cp.run_id)

    def finish(self, warnings: list[str]) -> dict[str, Any]:
        """Announce the run's end: the end marker, the warnings, phase 1 complete; the checkpoint goes. Phase 1."""
        cp, keys = self.cp, self.keys
        phase1 = {"run_id": cp.run_id, "raw_file": self.names["raw_file"], "records": cp.records, "pages": cp.next_page}
        tp = tracing.current_traceparent()
        # The end marker tells the transformers how many pages make the run.
        marker = {"kind": "end", "run_id": cp.run_id, "run_ts": cp.run_ts, "pages": cp.next_page, "records": cp.records}
        commands: list[Command] = [
            xadd(keys.raw_stream, streams.encode(marker, tp)),
            *self._warnings(warnings),
            self._event({"type": "phase1_complete", **phase1, "total": cp.total, "run_ts": cp.run_ts}, tp),
            ["PUBLISH", CHANNEL_PHASE1, orjson.dumps(phase1)],
            ["DEL", keys.checkpoint, keys.checkpoint_ids],
            # The TTL counts afresh from here: transforming and loading are still to come.
            self._claim(),
        ]
        self.lease.write(commands, cp.run_id)
        return phase1
