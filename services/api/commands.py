"""Asking the extractor for a run: a ``run_now`` entry on the commands stream, refused while a run is going."""

import time
import uuid
from functools import cached_property

import redis

from etl_common import streams
from etl_common.clock import utc_iso
from etl_common.keys import Keys

# Check and enqueue atomically, so two API replicas cannot both pass the check.
_REQUEST = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
return redis.call('XADD', KEYS[3], '*', unpack(ARGV))
"""


class RunInProgress(Exception):
    """The extractor's checkpoint or lock exists: a run is already going."""


class CommandQueue:
    """The commands stream of one key prefix; the Redis client is made on first use (reads never need it)."""

    def __init__(self, redis_url: str, key_prefix: str, timeout_s: float) -> None:
        self.redis_url, self.keys, self.timeout_s = redis_url, Keys(key_prefix), timeout_s

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

    def request_run(self, traceparent: str | None = None) -> str:
        """Enqueue a run-now command and return its request id; RunInProgress when a run is going."""
        request_id = uuid.uuid4().hex
        fields = streams.encode(
            {
                "type": "run_now",
                "request_id": request_id,
                "trigger": "api",
                "requested_at": utc_iso(),
                # The extractor skips a request that a run started after it already satisfies.
                "requested_at_epoch": time.time(),
            },
            traceparent,
        )
        argv = [part for kv in fields.items() for part in kv]
        keys = self.keys
        if not self.client.eval(_REQUEST, 3, keys.checkpoint, keys.extract_lock, keys.commands_stream, *argv):
            raise RunInProgress()
        return request_id
