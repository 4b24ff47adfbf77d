"""Extractor settings."""

from typing import Annotated

from croniter import croniter
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from etl_common.settings import BaseEtlSettings

# The derived page cap: generous for real users (a record may hold a 1 MB string) yet far from a bomb's GiB.
USER_MAX_BYTES = 64 * 1024
PAGE_MAX_BYTES_FLOOR = 8 * 1024 * 1024


class ExtractorSettings(BaseEtlSettings):
    """Source, paging, retries, schedule and backpressure."""

    source_url: str = "https://dummyjson.com/users"
    page_size: int = Field(100, ge=1, le=10_000)
    # Waits before retry 1, 2, 3...: "5,15,45" seconds; their count is the number of retries.
    retry_delays: Annotated[list[float], NoDecode] = [5.0, 15.0, 45.0]
    # Cap applied to a server's Retry-After so a hostile value cannot stall a run.
    retry_after_max_s: float = Field(120.0, ge=0)
    # Per read (connect, each chunk); the total of one response is bounded by source_deadline_s.
    request_timeout_s: float = Field(30.0, gt=0)
    # Total time one source response may take, headers and body: a trickling source is cut, the page retried.
    source_deadline_s: float = Field(60.0, gt=0)
    # Cap on a page's body, on the wire and once decompressed; 0 derives it from page_size (page_max_bytes).
    source_max_page_bytes: int = Field(0, ge=0)
    schedule: str = "0 3 * * *"
    run_on_start: bool = False
    # After a failed run, the service retries (resuming the same run) after this delay.
    resume_delay_s: float = Field(300.0, ge=0)
    lock_ttl_s: float = Field(120.0, gt=1)
    # The extractor waits while the raw and processed streams together hold more pages than this.
    raw_backlog_max_pages: int = Field(50, ge=1)
    # The PII policy (etl_common.pii) applied before a page enters Redis; the transformer's ETL_PII_POLICY too.
    pii_policy: str = Field("mask", pattern="^(mask|drop|keep)$")
    # Caps that make every run end, relative to the `total` the source announced first: past either the run is
    # failed with the reason (a source whose total runs ahead or whose list grows per request never ends).
    run_max_records_factor: float = Field(1.5, ge=1.0)
    run_max_pages_factor: float = Field(5.0, ge=1.0)
    # Page requests in flight at once once the run knows `total` (1: one at a time); a 429's wait holds them all.
    fetch_concurrency: int = Field(4, ge=1, le=64)

    def page_max_bytes(self) -> int:
        """A page's body cap: the setting, else 64 KiB per user asked (DummyJSON's are ~2 KiB), at least 8 MiB."""
        return self.source_max_page_bytes or max(PAGE_MAX_BYTES_FLOOR, self.page_size * USER_MAX_BYTES)

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                return [float(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError("expected seconds separated by commas, such as 5,15,45") from None
        return v

    @field_validator("retry_delays")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(d < 0 for d in v):
            raise ValueError("retry delays must be >= 0")
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not croniter.is_valid(v):
            raise ValueError(f"not a valid cron expression: {v!r}")
        return v
