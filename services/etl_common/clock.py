"""The project's one timestamp format: UTC, ISO 8601, to the millisecond (``2026-11-25T20:40:33.123Z``).

Strings of this one shape sort as the moments they name, so SQL can compare and order them.
"""

import functools
from datetime import datetime, timezone

STAMP_FORMAT = "%Y%m%d_%H%M%S"  # the run's stamp in file names (to the second)


def utc_iso(moment: datetime | None = None) -> str:
    """``moment`` (default now; naive means UTC) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=64)  # strptime costs ~20-60 us, and the saver asks for every page of a run
def stamp_iso(stamp: str) -> str:
    """A file-name stamp in the same format: ``20261125_204033`` -> ``2026-11-25T20:40:33.000Z``."""
    return utc_iso(datetime.strptime(stamp, STAMP_FORMAT))
