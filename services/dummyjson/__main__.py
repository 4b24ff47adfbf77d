"""Run the source server: python -m dummyjson --port 8001 --count 208 [--data F] [--bad-every 10] [--pool 1000]
[--latency-ms 150] [--ignore-skip] [--overlap N] [--total-ahead N] [--grow-per-request N] [--max-limit N]."""

import argparse
import json
import sys

from dummyjson.server import Paging, Source, build


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
    p.add_argument("--latency-ms", type=float, default=0.0, help="added before every /users answer")
    p.add_argument("--ignore-skip", action="store_true", help="fault: every page starts at the first user")
    p.add_argument("--overlap", type=int, default=0, help="fault: every page starts N users before skip")
    p.add_argument("--total-ahead", type=int, default=0, help="fault: total says N users more than the list holds")
    p.add_argument("--grow-per-request", type=int, default=0, help="fault: the list grows by N users per request")
    p.add_argument("--max-limit", type=int, default=0, help="fault: pages hold at most N users whatever limit asks")
    args = p.parse_args(argv)
    paging = Paging(
        args.ignore_skip, args.overlap, args.total_ahead, args.grow_per_request, args.latency_ms, args.max_limit
    )
    users = None
    if args.data:
        with open(args.data, encoding="utf-8") as fh:
            users = json.load(fh)
    server = build(args.host, args.port, Source(args.count, args.seed, args.bad_every, users, args.pool, paging))
    print(f"dummyjson serving on http://{args.host}:{server.server_address[1]}/users", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
