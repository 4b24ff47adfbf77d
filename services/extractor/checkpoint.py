"""The run checkpoint in Redis: which run is in progress and where its next page starts."""

from dataclasses import asdict, dataclass, fields

import redis
from redis.typing import EncodableT, FieldT

from etl_common.streams import text


@dataclass
class Checkpoint:
    """State of an unfinished run; advanced in the same transaction that hands a page on."""

    run_id: str
    run_ts: str
    started_at: str
    trigger: str
    raw_file: str
    next_skip: int = 0
    next_page: int = 0
    records: int = 0
    total: int = -1
    traceparent: str = ""

    def mapping(self) -> dict[FieldT, EncodableT]:
        """The fields as the Redis hash stores them (every value as text)."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def load(cls, client: redis.Redis, key: str) -> "Checkpoint | None":
        """The checkpoint stored in hash ``key``; None when no run is in progress."""
        raw = client.hgetall(key)
        if not raw:
            return None
        data = {text(k): text(v) for k, v in raw.items()}
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            if f.name in data:
                kwargs[f.name] = int(data[f.name]) if f.type in (int, "int") else data[f.name]
        return cls(**kwargs)  # type: ignore[arg-type]
