"""The state every stream-reading service holds: settings, Redis client, key names and its consumer-group reader."""

from collections.abc import Callable
from typing import Generic, TypeVar

import redis

from etl_common import streams, streamstats
from etl_common.keys import Keys
from etl_common.ops import Heartbeat
from etl_common.runtime import Stopper
from etl_common.settings import BaseEtlSettings

S = TypeVar("S", bound=BaseEtlSettings)


class StreamWorker(Generic[S]):
    """Base of the extractor's service and the transformer's and saver's workers.

    Reads the streams ``stream_names(keys)`` returns as consumer group ``group`` (``self.reader``) and
    publishes those streams' length and lag (``streamstats.watch``).
    """

    def __init__(
        self,
        settings: S,
        client: redis.Redis,
        heartbeat: Heartbeat,
        stopper: Stopper,
        group: str,
        stream_names: Callable[[Keys], list[str]],
    ) -> None:
        self.settings = settings
        self.client = client
        self.heartbeat = heartbeat
        self.stopper = stopper
        self.keys = Keys(settings.key_prefix)
        self.reader = streams.GroupReader.for_settings(client, group, stream_names(self.keys), settings)
        streamstats.watch(settings.redis_url, self.keys, group, self.reader.streams)
