"""Entry point: ``python -m saver`` loads pages until SIGTERM; ``python -m saver migrate`` only migrates."""

import argparse
import sys

from etl_common import runtime
from etl_common.redis_client import connect, wait_for_redis
from saver.settings import SaverSettings
from saver.store import Store
from saver.worker import Worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saver", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = SaverSettings()
    store = Store(settings.db_path)
    if args.command == "migrate":
        store.close()
        return 0
    client = connect(settings.redis_url)
    heartbeat, stopper = runtime.start("saver", settings, ready=client.ping)
    wait_for_redis(client)
    try:
        Worker(settings, client, store, heartbeat, stopper).serve()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
