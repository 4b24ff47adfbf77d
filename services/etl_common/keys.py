"""Every Redis key, stream, group and channel name of the pipeline, defined once."""

from dataclasses import dataclass

# Pub/sub channels kept from the original design (compat): not prefixed.
CHANNEL_PHASE1 = "channel:phase1_complete"
CHANNEL_PHASE2 = "channel:phase2_complete"
CHANNEL_PHASE3 = "channel:phase3_complete"

GROUP_TRANSFORMER = "transformer"
GROUP_SAVER = "saver"
GROUP_EXTRACTOR = "extractor"


def request_claim(request_id: str, requested_at: str) -> str:
    """The value of ``Keys.run_claim`` while a run-now request waits for the extractor."""
    return f"request:{request_id}@{requested_at}"


def run_claim(run_id: str) -> str:
    """The value of ``Keys.run_claim`` once the extractor has started (or resumed) the run."""
    return f"run:{run_id}"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (default ``etl:``)."""

    prefix: str = "etl:"

    @property
    def raw_stream(self) -> str:
        """Stream of fetched pages (run id, page offset, records): extractor -> transformer group."""
        return f"{self.prefix}stream:raw"

    @property
    def processed_stream(self) -> str:
        """Stream of transformed pages (valid and invalid records): transformer -> saver group."""
        return f"{self.prefix}stream:processed"

    @property
    def events_stream(self) -> str:
        """Run lifecycle events (``run_started``, ``phase1_complete``, ``extract_failed``...), read by the saver."""
        return f"{self.prefix}stream:events"

    @property
    def commands_stream(self) -> str:
        """Stream of commands to the extractor (start a run now), written by the API."""
        return f"{self.prefix}stream:commands"

    @property
    def dead_stream(self) -> str:
        """Dead-letter stream: entries that cannot be handled (malformed, or over ``max_deliveries``) and why."""
        return f"{self.prefix}stream:dead"

    @property
    def dead_counts(self) -> str:
        """Hash run_id -> entries of that run moved to the dead-letter stream."""
        return f"{self.prefix}stream:dead:runs"

    @property
    def dead_audit(self) -> str:
        """Audit stream of what operators and retention did with dead letters (replayed, dropped, expired)."""
        return f"{self.prefix}stream:dead:audit"

    @property
    def checkpoint(self) -> str:
        """Hash of the run in progress and where its next page starts (``extractor.checkpoint``)."""
        return f"{self.prefix}checkpoint"

    @property
    def extract_lock(self) -> str:
        """Lock held by the extractor that is running a run, so only one runs at a time."""
        return f"{self.prefix}lock:extract"

    @property
    def run_claim(self) -> str:
        """The one run queued or going: ``request:<id>@<time>`` (API) then ``run:<run_id>`` (extractor), with a TTL."""
        return f"{self.prefix}runs:claim"

    @property
    def checkpoint_ids(self) -> str:
        """The user ids the run in progress has handed on, one JSON array per page (duplicates across a resume)."""
        return f"{self.prefix}checkpoint:ids"

    @property
    def extract_fence(self) -> str:
        """Counter taken (INCR) with the run lock: the fencing token every write of the run checks."""
        return f"{self.prefix}lock:extract:fence"

    def run_pages(self, run_id: str) -> str:
        """Hash page -> "valid,invalid" of the pages a transformer has handed on."""
        return f"{self.prefix}run:{run_id}:pages"

    def run_meta(self, run_id: str) -> str:
        """Hash with the run's expected page count and its phase 2 flag."""
        return f"{self.prefix}run:{run_id}:meta"
