"""The run lease: the one-run-at-a-time lock plus a fencing token that every write of the run checks."""

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import structlog
from redis.typing import EncodableT

from etl_common import metrics
from etl_common.errors import RunInterrupted
from etl_common.keys import Keys
from etl_common.streams import text
from extractor.errors import Interrupted

log = structlog.get_logger(__name__)

# One Redis command of a fenced write: its name, then its arguments (keys written out).
Command = Sequence[EncodableT]

# KEYS: the fence, the checkpoint, the lock. ARGV: this lease's token, the run id the checkpoint must hold (""
# when no run may be in progress, ANY_RUN for a renewal), the lock's token and TTL in ms, then each command as
# its length followed by its words. The commands name their keys in ARGV: the project runs one Redis, not a
# cluster, where a script's keys would have to share a slot anyway.
# One round trip checks the fence and the run, keeps the lease (takes it back when it lapsed and nobody took
# it: the fence proves that), runs the commands and returns their replies; a script runs alone, as EXEC does.
_FENCED_WRITE = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if fence ~= tonumber(ARGV[1]) then return {'fence', tostring(fence)} end
local owner = redis.call('HGET', KEYS[2], 'run_id') or ''
if ARGV[2] ~= '*' and owner ~= ARGV[2] then return {'run', owner} end
local holder = redis.call('GET', KEYS[3])
local retaken = 0
if holder == ARGV[3] then
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
elseif not holder then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  retaken = 1
else
  return {'lock', ''}
end
local replies = {'ok', retaken}
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  replies[#replies + 1] = redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return replies
"""
ANY_RUN = "*"  # never a run id
# How long one step of the wait for the lock blocks: a stop is noticed between steps.
_WAIT_STEP_S = 0.2


class LeaseLost(RunInterrupted):
    """Another extractor took the run over (a newer token) or ended it: this one stops writing; the holder resumes."""


class Lease:
    """The run lock and its token: the lock keeps two extractors apart, the token keeps a late one from writing.

    A lock can lapse while its owner waits on a slow page; another extractor may then take it. Each taking
    increments ``keys.extract_fence``; every write of the run is one script that runs only while that counter
    still holds this extractor's token, so the one that lost the lease cannot write again.
    """

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: float, wait_s: float) -> None:
        self.client, self.keys, self.ttl_s, self.wait_s = client, keys, ttl_s, wait_s
        # Not thread-local: the fetchers' threads renew the lease while they await the source (extractor/fetcher.py).
        self.lock = client.lock(keys.extract_lock, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
        self.token = 0
        self.waited = False
        self.fenced_write = client.register_script(_FENCED_WRITE)

    def acquire(self, should_stop: Callable[[], bool] = lambda: False, beat: Callable[[], None] = lambda: None) -> bool:
        """Take the lock (waiting up to ``wait_s``) and a new token; False when another extractor still holds it.

        The wait goes in short steps, so a stop is honoured at once (Interrupted). ``waited`` says afterwards
        whether another extractor held the lock first.
        """
        deadline = time.monotonic() + self.wait_s
        self.waited = False
        while not self.lock.acquire(blocking=False):
            if not self.waited and self.wait_s > 0:
                log.info(
                    "a run is already in progress under another extractor: waiting for its lock", wait_s=self.wait_s
                )
            self.waited = True
            beat()
            if should_stop():
                raise Interrupted("stopped while waiting for another extractor's run lock; this one began no run")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.lock.acquire(blocking_timeout=min(_WAIT_STEP_S, left)):
                break
        # Read the checkpoint only after this: a predecessor's last write is then either in it or refused.
        self.token = int(self.client.incr(self.keys.extract_fence))
        return True

    def write(self, commands: list[Command], run_id: str | None) -> list[Any]:
        """Run ``commands`` at once, in one round trip, only while this lease is current; their replies.

        ``run_id``: the checkpoint must be this run's (None: no checkpoint may exist, a run is starting).
        LeaseLost otherwise, and nothing is written. The write also renews the lease.
        """
        keys = self.keys
        args: list[EncodableT] = [self.token, run_id or "", self.lock.local.token or "", int(self.ttl_s * 1000)]
        for command in commands:
            args += [len(command), *command]
        replies = self.fenced_write(keys=[keys.extract_fence, keys.checkpoint, keys.extract_lock], args=args)
        outcome = text(replies[0])
        if outcome == "fence":
            raise LeaseLost(
                f"another extractor took the run lease (token {text(replies[1])}, this one {self.token}): "
                "it continues the run; this one stops without writing"
            )
        if outcome == "run":
            raise LeaseLost(f"run {run_id} is no longer the run in progress: this extractor stops without writing")
        if outcome == "lock":
            raise LeaseLost("another extractor holds the run lock")
        if replies[1]:
            self._taken_back()
        return list(replies[2:])

    def renew(self) -> None:
        """Extend the lease; when it lapsed and nobody took it, take it back with the same token (else LeaseLost)."""
        try:
            self.lock.extend(self.ttl_s, replace_ttl=True)
            return
        except redis.exceptions.LockError:
            pass
        # A fenced write of nothing takes the lapsed lock back, or says why it cannot.
        self.write([], ANY_RUN)

    def _taken_back(self) -> None:
        log.warning(
            "the run lease had lapsed (a page or a wait took longer than ETL_LOCK_TTL_S); nobody took it: taken back"
        )

    def lost(self, exc: LeaseLost) -> None:
        """Say that this extractor stops because it lost the lease."""
        metrics.LEASE_LOST.inc()
        log.warning("run lease lost; stopping without writing", reason=str(exc))

    def release(self) -> None:
        """Free the lock if this extractor still holds it, so the next one starts or resumes at once."""
        try:
            self.lock.release()
        except redis.exceptions.LockError:
            log.info("run lock not released: it had lapsed or another extractor holds it")
        except redis.RedisError as exc:
            log.warning("run lock not released: redis unavailable; it lapses after ETL_LOCK_TTL_S", error=str(exc))
