"""The extractor service loop: daily schedule, run-now commands, resume of an unfinished run."""

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import redis
import structlog
from croniter import croniter

from etl_common import retry, streams, streamstats
from etl_common.clock import utc_iso
from etl_common.errors import EtlError, RunAborted, RunInterrupted
from etl_common.keys import GROUP_EXTRACTOR, request_claim
from etl_common.ops import Heartbeat
from etl_common.runtime import Stopper, serve_loop
from etl_common.worker import StreamWorker
from extractor import pages, run
from extractor.errors import AlreadyRunning, Interrupted, RunEndedMeanwhile
from extractor.lease import LeaseLost
from extractor.settings import ExtractorSettings

log = structlog.get_logger(__name__)

# Compare and delete: only the claim of this very request, never a run's or a later request's.
_RELEASE_CLAIM = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Service(StreamWorker[ExtractorSettings]):
    """Runs extractions when the schedule fires, when asked, and to finish an interrupted run."""

    def __init__(
        self,
        settings: ExtractorSettings,
        client: redis.Redis,
        heartbeat: Heartbeat,
        stopper: Stopper,
        serving: bool = True,
    ) -> None:
        super().__init__(settings, client, heartbeat, stopper, GROUP_EXTRACTOR, lambda keys: [keys.commands_stream])
        # Only a serving extractor resumes a failed run by itself; the one-shot command says so differently.
        self.serving = serving
        self.next_fire = self._next_fire()
        self.retry_at: float | None = None
        # What the last failed attempt leaves: a checkpoint to resume, or nothing (failed for good, taken over).
        self.resumable = True
        # Also the raw stream's length, which drives the backpressure.
        streamstats.watch(settings.redis_url, self.keys, "", [self.keys.raw_stream])
        pages.warm_up()

    def _next_fire(self) -> float:
        now = datetime.now(timezone.utc)
        return float(croniter(self.settings.schedule, now).get_next(float))

    def extract(self, trigger: str, wait_s: float = 0.0) -> bool:
        """One extraction (or the end of the unfinished one first); False when it did not end well.

        ``wait_s``: how long to wait out another extractor's lease (the one-shot command waits for a dead one).
        """
        return self._conclude(
            lambda: run.extract(self.settings, self.client, trigger, self._stopping, self.heartbeat.beat, wait_s),
            trigger,
            wait_s,
        )

    def resume(self, wait_s: float = 0.0) -> bool:
        """Finish the unfinished run, if there is one (never starts a new one); False when it did not end well."""
        return self._conclude(
            lambda: run.resume(self.settings, self.client, self._stopping, self.heartbeat.beat, wait_s),
            "resume",
            wait_s,
        )

    def _stopping(self) -> bool:
        return self.stopper.stopping

    def _conclude(self, attempt: Callable[[], object], trigger: str, wait_s: float) -> bool:
        """Run ``attempt`` and act once on how it ended, by the branch of its error (etl_common.errors)."""
        self.resumable = True
        try:
            attempt()
            self.retry_at = None
            return True
        except RunEndedMeanwhile as exc:  # the holder of the lock ran the run this request asked for
            log.info("no second run: the run already in progress has ended", outcome=str(exc), trigger=trigger)
            self.retry_at = None
            return True
        except AlreadyRunning:  # defer: the holder of the lock runs the run
            log.warning("a run is already in progress elsewhere; request ignored", trigger=trigger)
            return wait_s == 0
        except (Interrupted, retry.Stopped) as exc:
            log.info("run interrupted; the checkpoint keeps its place", reason=str(exc))
            return False
        except LeaseLost:
            self.resumable = False
            log.warning("another extractor continues the run; this one wrote nothing after losing its lease")
            return False
        except RunAborted as exc:
            # A resume would meet the same source: the run is over; the next one starts afresh.
            self.resumable, self.retry_at = False, None
            log.error("run failed for good; the next run starts afresh", error=str(exc))
            return False
        except RunInterrupted as exc:  # SourceFailed, RunFailed
            if self.serving:
                self.retry_at = time.time() + self.settings.resume_delay_s
                log.error("run failed; will resume", error=str(exc), resume_in_s=self.settings.resume_delay_s)
            else:
                log.error("run failed; the checkpoint keeps its place", error=str(exc))
            return False

    def serve(self) -> None:
        """Resume an unfinished run (or run at start if so set), then follow schedule and commands until SIGTERM."""
        self.reader.setup()
        log.info(
            "extractor ready",
            schedule=self.settings.schedule,
            next_run=utc_iso(datetime.fromtimestamp(self.next_fire, timezone.utc)),
        )
        # Whether a checkpoint exists, not whether it reads: the resume names an unreadable one and clears it.
        if self.client.exists(self.keys.checkpoint):
            # A predecessor stopped mid-run (and freed the lock) or died (wait out its lease): resume the same run.
            if self._lock_freed(self.settings.lock_ttl_s + 1):
                self.resume(wait_s=1.0)
        elif self.settings.run_on_start:
            self.extract("startup")
        serve_loop(self._turn, self.reader.setup, self.heartbeat, self.stopper)
        log.info("extractor stopped")

    def _lock_freed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for no extractor to hold the run lock; False when SIGTERM came first.

        Polled rather than a blocking acquire, so a stop during a predecessor's lease is honoured at once.
        """
        deadline = time.monotonic() + timeout_s
        while self.client.exists(self.keys.extract_lock) and time.monotonic() < deadline:
            self.heartbeat.beat()
            if self.stopper.sleep(0.1):
                return False
        return True

    def _satisfied(self, command: dict[str, Any]) -> bool:
        """True when a run started after the request was made (so a burst of requests makes one run)."""
        requested = command.get("requested_at_epoch")
        started = self.client.get(f"{self.keys.prefix}last_run_started")
        return isinstance(requested, (int, float)) and started is not None and float(started) > requested

    def _turn(self) -> None:
        now = time.time()
        if now >= self.next_fire:
            self.next_fire = self._next_fire()
            self.extract("schedule")
        elif self.retry_at is not None and now >= self.retry_at:
            self.resume()
        # One command at a time, so replicas share them and a busy one does not hoard requests.
        for entry in self.reader.read(1):
            try:
                command, _ = streams.decode(entry.fields)
            except EtlError as exc:
                self.reader.dead_letter(entry, str(exc))
                continue
            if command.get("type") == "run_now":
                if self._satisfied(command):
                    log.info("run request already satisfied by a later run", request_id=command.get("request_id"))
                else:
                    log.info("run requested", request_id=command.get("request_id"))
                    self.extract(command.get("trigger", "api"))
                # A run that started holds the claim by now; a request that made none (satisfied, deferred,
                # failed before its start) must not keep new ones out until the claim's TTL.
                claim = request_claim(str(command.get("request_id")), str(command.get("requested_at")))
                self.client.eval(_RELEASE_CLAIM, 1, self.keys.run_claim, claim)
            else:
                log.warning("unknown command ignored", command=command.get("type"))
            self.reader.ack([entry])
