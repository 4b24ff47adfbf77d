"""Entry point: ``python -m transformer`` consumes raw pages until SIGTERM."""

import sys

from etl_common import retry, runtime
from etl_common.redis_client import connect
from etl_common.settings import load
from transformer.enrich import load_departments
from transformer.settings import TransformerSettings
from transformer.worker import Worker


def main() -> int:
    """Load the departments, wait for Redis, consume until SIGTERM; exit status 0 (1 when Redis stays away,
    2 on a bad setting)."""
    settings = load(TransformerSettings)
    departments = load_departments(settings.departments_csv)
    client = connect(settings.redis_url)
    heartbeat, stopper = runtime.start("transformer", settings, ready=client.ping)
    runtime.wait_for_redis_or_exit("transformer", client)
    try:
        Worker(settings, client, departments, heartbeat, stopper).serve()
    except retry.Stopped:
        pass  # SIGTERM during a wait before the loop: entries stay pending for the next start
    return 0


if __name__ == "__main__":
    sys.exit(main())
