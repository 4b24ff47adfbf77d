"""Every Redis key, stream, group and channel name of the pipeline, defined once."""

from dataclasses import dataclass

# Pub/sub channels kept from the original design (compat): not prefixed.
CHANNEL_PHASE1 = "channel:phase1_complete"
CHANNEL_PHASE2 = "channel:phase2_complete"
CHANNEL_PHASE3 = "channel:phase3_complete"

GROUP_TRANSFORMER = "transformer"
GROUP_SAVER = "saver"
GROUP_EXTRACTOR = "extractor"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (default ``etl:``)."""

    prefix: str = "etl:"

    @property
    def raw_stream(self) -> str:
        return f"{self.prefix}stream:raw"

    @property
    def processed_stream(self) -> str:
        return f"{self.prefix}stream:processed"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}stream:events"

    @property
    def commands_stream(self) -> str:
        return f"{self.prefix}stream:commands"

    @property
    def dead_stream(self) -> str:
        return f"{self.prefix}stream:dead"

    @property
    def dead_counts(self) -> str:
        """Hash run_id -> entries of that run moved to the dead-letter stream."""
        return f"{self.prefix}stream:dead:runs"

    @property
    def checkpoint(self) -> str:
        return f"{self.prefix}checkpoint"

    @property
    def extract_lock(self) -> str:
        return f"{self.prefix}lock:extract"

    def run_pages(self, run_id: str) -> str:
        """Hash page -> "valid,invalid" of the pages a transformer has handed on."""
        return f"{self.prefix}run:{run_id}:pages"

    def run_meta(self, run_id: str) -> str:
        """Hash with the run's expected page count and its phase 2 flag."""
        return f"{self.prefix}run:{run_id}:meta"
