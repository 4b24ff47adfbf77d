"""The response cache in front of the API's router, on a real SQLite file the saver commits to."""

import asyncio

import pytest

from api import cache
from api.cache import ResponseCache
from api.db import Database
from api.settings import ApiSettings
from saver.store import Store

TOKEN = "cache-test-token"
SETTINGS = ApiSettings(api_token=TOKEN, api_auth="token")


class Downstream:
    """Stands for the router: counts the requests that reach it and answers ``status`` with a numbered body."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = 200
        self.body_size = 0

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        scope["route"] = f"route:{scope['path']}"
        body = f"answer {self.calls}".encode().ljust(self.body_size, b" ")
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"x-n", b"%d" % self.calls)]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def stack(tmp_path):
    store = Store(str(tmp_path / "data.db"))  # the saver: makes the schema, later commits
    downstream = Downstream()
    layer = ResponseCache(downstream, SETTINGS, Database(str(tmp_path / "data.db")))
    yield layer, downstream, store
    store.close()


def _get(layer, path: str = "/etl_runs", query: bytes = b"", token: str | None = TOKEN, method: str = "GET"):
    """(status, headers, body, scope) of one request through the layer."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(layer(scope, receive, send))
    return sent[0]["status"], sent[0]["headers"], sent[1]["body"], scope


def test_a_repeated_get_is_answered_from_memory_with_the_same_headers_and_route(stack):
    layer, downstream, _ = stack
    first = _get(layer)
    again = _get(layer)
    assert downstream.calls == 1
    assert again[:3] == first[:3] == (200, [(b"x-n", b"1")], b"answer 1")
    assert again[3]["route"] == "route:/etl_runs"  # the metrics keep their route label on a hit


def test_a_commit_of_the_saver_makes_the_next_get_ask_the_router_again(stack):
    layer, downstream, store = stack
    _get(layer)
    # Any commit by another connection changes data_version.
    store.conn.execute("INSERT INTO etl_runs (run_id, run_timestamp, status) VALUES ('r9', 'x', 'running')")
    assert _get(layer)[2] == b"answer 2" and downstream.calls == 2
    assert _get(layer)[2] == b"answer 2" and downstream.calls == 2


def test_path_and_query_string_are_the_key(stack):
    layer, downstream, _ = stack
    _get(layer, query=b"limit=1")
    _get(layer, query=b"limit=2")
    _get(layer, path="/summary")
    assert downstream.calls == 3
    assert _get(layer, query=b"limit=1")[2] == b"answer 1"


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_request_without_the_token_never_gets_a_cached_answer(stack, token):
    layer, downstream, _ = stack
    _get(layer)
    _get(layer, token=token)
    _get(layer, token=token)
    assert downstream.calls == 3  # the router answers (401) every time


def test_only_gets_of_the_read_routes_are_cached(stack):
    layer, downstream, _ = stack
    for _ in range(2):
        _get(layer, path="/etl_runs/1")
        _get(layer, path="/query_sql", method="POST")
        _get(layer, method="POST")
    assert downstream.calls == 6


def test_errors_and_large_answers_are_not_kept(stack):
    layer, downstream, _ = stack
    downstream.status = 503
    _get(layer)
    _get(layer)
    assert downstream.calls == 2
    downstream.status, downstream.body_size = 200, cache.MAX_BODY_BYTES + 1
    _get(layer, path="/summary")
    _get(layer, path="/summary")
    assert downstream.calls == 4 and layer.total_bytes == 0


def test_before_the_database_exists_every_request_reaches_the_router(tmp_path):
    downstream = Downstream()
    layer = ResponseCache(downstream, SETTINGS, Database(str(tmp_path / "none" / "data.db")))
    _get(layer)
    _get(layer)
    assert downstream.calls == 2
