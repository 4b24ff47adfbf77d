"""Run the source server: python -m dummyjson --port 8001 --count 208 [--data F] [--bad-every 10] [--pool 1000]."""

import argparse
import json
import sys

from dummyjson.server import Source, build


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; prints the URL (with the port actually bound) first. Exit status 0."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--count", type=int, default=208, help="users to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bad-every", type=int, default=0, help="every Nth user is broken")
    p.add_argument("--data", help="serve this JSON array of users instead of generated ones")
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        help="generate only this many users and clone the rest from them (fast, for benchmarks)",
    )
    args = p.parse_args(argv)
    users = None
    if args.data:
        with open(args.data, encoding="utf-8") as fh:
            users = json.load(fh)
    server = build(args.host, args.port, Source(args.count, args.seed, args.bad_every, users, args.pool))
    print(f"dummyjson serving on http://{args.host}:{server.server_address[1]}/users", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
