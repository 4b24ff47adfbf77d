"""Fixtures of the unit tests: the services' workers built in this process against the session's redis-server."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testbed.workers import Built, build_worker, close_worker


@pytest.fixture
def make_worker(redis_server, tmp_path) -> Iterator[Callable[..., Any]]:
    """``make_worker(service, **settings)``: that service's worker object, not started (arq's worker factory).

    Real Redis (a fresh key prefix unless ``key_prefix=`` shares one), its files under ``tmp_path``; closed after.
    """
    made: list[Built] = []

    def make(service: str, **settings: Any) -> Any:
        worker = build_worker(service, redis_server.url, tmp_path / f"{service}-{len(made)}", **settings)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        close_worker(worker)
