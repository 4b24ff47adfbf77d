"""The run lease: the one-run-at-a-time lock plus a fencing token that every write of the run checks."""

from collections.abc import Callable
from typing import Any

import redis
import structlog
from redis.client import Pipeline

from etl_common import metrics
from etl_common.errors import TransientError
from etl_common.keys import Keys
from etl_common.streams import text

log = structlog.get_logger(__name__)


class LeaseLost(TransientError):
    """Another extractor took the run over (a newer token) or ended it: this one must stop writing."""


class Lease:
    """The run lock and its token: the lock keeps two extractors apart, the token keeps a late one from writing.

    A lock can lapse while its owner waits on a slow page; another extractor may then take it. Each taking
    increments ``keys.extract_fence``; every write of the run is one MULTI/EXEC that runs only while that
    counter still holds this extractor's token (WATCH), so the one that lost the lease cannot write again.
    """

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: float, wait_s: float) -> None:
        self.client, self.keys, self.ttl_s, self.wait_s = client, keys, ttl_s, wait_s
        # Not thread-local: the fetchers' threads renew the lease while they await the source (extractor/fetcher.py).
        self.lock = client.lock(keys.extract_lock, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
        self.token = 0

    def acquire(self) -> bool:
        """Take the lock (waiting up to ``wait_s``) and a new token; False when another extractor holds it."""
        if not self.lock.acquire(blocking=self.wait_s > 0):
            return False
        # Read the checkpoint only after this: a predecessor's last write is then either in it or refused.
        self.token = int(self.client.incr(self.keys.extract_fence))
        return True

    def write(self, queue: Callable[[Pipeline], None], run_id: str | None) -> list[Any]:
        """Run the commands ``queue`` adds in one transaction, only while this lease is current.

        ``run_id``: the checkpoint must be this run's (None: no checkpoint may exist, a run is starting).
        LeaseLost otherwise, and nothing is written.
        """

        def transaction(pipe: Pipeline) -> None:
            fence = pipe.get(self.keys.extract_fence)
            owner = pipe.hget(self.keys.checkpoint, "run_id")
            if int(fence or 0) != self.token:
                raise LeaseLost(
                    f"another extractor took the run lease (token {int(fence or 0)}, this one {self.token}): "
                    "it continues the run; this one stops without writing"
                )
            if (text(owner) if owner is not None else None) != run_id:
                raise LeaseLost(f"run {run_id} is no longer the run in progress: this extractor stops without writing")
            pipe.multi()
            queue(pipe)

        return list(self.client.transaction(transaction, self.keys.extract_fence, self.keys.checkpoint) or [])

    def renew(self) -> None:
        """Extend the lease; when it lapsed and nobody took it, take it back with the same token (else LeaseLost)."""
        try:
            self.lock.extend(self.ttl_s, replace_ttl=True)
            return
        except redis.exceptions.LockError:
            pass
        name, token, ttl_ms = self.keys.extract_lock, self.lock.local.token, int(self.ttl_s * 1000)

        def transaction(pipe: Pipeline) -> None:
            if int(pipe.get(self.keys.extract_fence) or 0) != self.token:
                raise LeaseLost("another extractor took the run lease while this one waited on the source")
            pipe.multi()
            pipe.set(name, token, nx=True, px=ttl_ms)

        if not (self.client.transaction(transaction, self.keys.extract_fence) or [None])[0]:
            raise LeaseLost("another extractor holds the run lock")
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
