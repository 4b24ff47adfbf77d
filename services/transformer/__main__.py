"""Entry point: ``python -m transformer`` consumes raw pages until SIGTERM."""

import sys

from etl_common import runtime
from etl_common.redis_client import connect, wait_for_redis
from transformer.enrich import load_departments
from transformer.settings import TransformerSettings
from transformer.worker import Worker


def main() -> int:
    """Load the departments, wait for Redis, consume until SIGTERM; exit status 0."""
    settings = TransformerSettings()
    departments = load_departments(settings.departments_csv)
    client = connect(settings.redis_url)
    heartbeat, stopper = runtime.start("transformer", settings, ready=client.ping)
    wait_for_redis(client)
    Worker(settings, client, departments, heartbeat, stopper).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
