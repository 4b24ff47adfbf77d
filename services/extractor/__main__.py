"""Entry point: `python -m extractor` serves (schedule, commands); `python -m extractor once` runs one extraction."""

import argparse
import sys

import structlog

from etl_common import runtime
from etl_common.redis_client import connect, wait_for_redis
from extractor.service import Service
from extractor.settings import ExtractorSettings


def main(argv: list[str] | None = None) -> int:
    """Serve, or run one extraction; the exit status is 1 when that extraction failed."""
    parser = argparse.ArgumentParser(prog="python -m extractor", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "once"])
    parser.add_argument("--trigger", default=None, help="recorded as the run's trigger")
    args = parser.parse_args(argv)
    settings = ExtractorSettings()
    client = connect(settings.redis_url)
    # The one-shot command serves no ops endpoint: it may run beside the service (same port) or as a Job.
    ops_settings = settings if args.command == "serve" else settings.model_copy(update={"ops_port": 0})
    heartbeat, stopper = runtime.start("extractor", ops_settings, ready=client.ping)
    wait_for_redis(client)
    service = Service(settings, client, heartbeat, stopper)
    if args.command == "once":
        # Waits out the lease of an extractor that died mid-run, then resumes its run.
        ok = service.run_once(args.trigger or "manual", lock_wait_s=settings.lock_ttl_s + 1)
        if not ok:
            structlog.get_logger().error("extraction failed; rerun to resume from the checkpoint")
        return 0 if ok else 1
    service.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
