"""Asking the extractor for a run: a ``run_now`` entry on the commands stream, one run queued or going."""

import time
import uuid
from collections.abc import Callable
from functools import cached_property

import redis
from redis.typing import EncodableT

from etl_common import streams
from etl_common.clock import utc_iso
from etl_common.keys import Keys, request_claim, run_claim
from etl_common.runs import AT_REST

# Check, claim and enqueue in one script, so N requests (on any number of API processes) queue one run.
# KEYS: checkpoint, run lock, run claim, commands stream. ARGV: this request's claim, its TTL in ms, the claim
# the caller found stale (its run is at rest, or ""), then the command's fields.
_REQUEST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local run = redis.pcall('HGET', KEYS[1], 'run_id')
  return {'extracting', type(run) == 'string' and run or ''}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'extracting', ''} end
local claim = redis.call('GET', KEYS[3])
if claim and claim ~= ARGV[3] then return {'claimed', claim} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return {'ok', redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4))}
"""
RUN_CLAIM, REQUEST_CLAIM = run_claim(""), request_claim("", "").partition("@")[0]  # the claims' prefixes


class RunInProgress(Exception):
    """A run is queued or going (the claim, the extractor's checkpoint or its lock): the message says which."""


class CommandQueue:
    """The commands stream of one key prefix; the Redis client is made on first use (reads never need it)."""

    def __init__(self, redis_url: str, key_prefix: str, timeout_s: float, claim_ttl_s: float = 3600.0) -> None:
        self.redis_url, self.keys, self.timeout_s, self.claim_ttl_s = (
            redis_url,
            Keys(key_prefix),
            timeout_s,
            claim_ttl_s,
        )

    @cached_property
    def client(self) -> redis.Redis:
        """The Redis client, made on first use with ``timeout_s`` for connecting and for every reply."""
        # Short timeouts and no retries: a request should fail fast with 503, not hang.
        return redis.Redis.from_url(
            self.redis_url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
        )

    def dead_letters(self, run_id: str) -> int | None:
        """Entries of ``run_id`` in the dead-letter stream; None when Redis cannot tell now."""
        try:
            count = self.client.hget(self.keys.dead_counts, run_id)
        except redis.RedisError:
            return None
        return int(count or 0)

    def request_run(self, run_status: Callable[[str], str | None], traceparent: str | None = None) -> str:
        """Enqueue a run-now command and return its request id; RunInProgress while a run is queued or going.

        ``run_status``: a run's status in the database (None when it has no row yet). A claim naming a run
        at rest there is stale: this request may replace it, and only one request can (the script compares).
        """
        request_id, requested_at = uuid.uuid4().hex, utc_iso()
        fields = streams.encode(
            {
                "type": "run_now",
                "request_id": request_id,
                "trigger": "api",
                "requested_at": requested_at,
                # The extractor skips a request that a run started after it already satisfies.
                "requested_at_epoch": time.time(),
            },
            traceparent,
        )
        keys = self.keys
        claim = streams.text(self.client.get(keys.run_claim) or b"")
        status = run_status(claim.removeprefix(RUN_CLAIM)) if claim.startswith(RUN_CLAIM) else None
        stale = claim if status is not None and status in AT_REST else ""
        argv: list[EncodableT] = [request_claim(request_id, requested_at), int(self.claim_ttl_s * 1000), stale]
        argv += [part for kv in fields.items() for part in kv]
        outcome, what = self.client.eval(
            _REQUEST, 4, keys.checkpoint, keys.extract_lock, keys.run_claim, keys.commands_stream, *argv
        )
        if streams.text(outcome) == "ok":
            return request_id
        raise RunInProgress(_refusal(streams.text(outcome), streams.text(what), run_status))


def _refusal(outcome: str, what: str, run_status: Callable[[str], str | None]) -> str:
    """The 409's one sentence: which run is queued or going, and what to do."""
    then = "; try again when it has finished"
    if outcome == "extracting":
        run = f"run {what}" if what else "a run"
        follow = f" (GET /etl_runs/{what} or `etl runs show {what}` follows it)" if what else ""
        return f"a run is already going: {run} is being extracted{follow}{then}"
    if what.startswith(REQUEST_CLAIM):
        request_id, _, at = what.removeprefix(REQUEST_CLAIM).partition("@")
        return f"a run is already queued: request {request_id}, made at {at}, waits for the extractor{then}"
    run_id = what.removeprefix(RUN_CLAIM)
    status = run_status(run_id)
    state = f"status {status}" if status else "started, not yet recorded by the saver"
    return f"a run is already going: run {run_id} ({state}; GET /etl_runs/{run_id} follows it){then}"
