"""The transformer's hand-on on a real redis-server: tallied once, the records' text kept only when exact."""

import copy
import uuid

import orjson
import pytest
import redis

from dummyjson.users import make_bad_user, make_user
from etl_common import pii, streams
from etl_common.keys import Keys
from etl_common.ops import Heartbeat
from etl_common.runtime import Stopper
from transformer.contract import load_contract
from transformer.enrich import load_departments
from transformer.settings import TransformerSettings
from transformer.transform import transform_page
from transformer.worker import Worker

RUN_TS = "20261204_010000"


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def _worker(client, redis_server, policy: str = "evolve") -> Worker:
    settings = TransformerSettings(
        redis_url=redis_server.url, key_prefix=f"t{uuid.uuid4().hex[:8]}:", consumer_name="a", block_ms=10
    )
    worker = Worker(settings, client, load_departments(), Heartbeat(60), Stopper(), load_contract("", policy))
    worker.reader.setup()
    return worker


def _page(page: int, records: list, mark: str | None = "mask") -> dict:
    entry = {"kind": "page", "run_id": "r1", "run_ts": RUN_TS, "page": page, "skip": page * 10, "total": 20}
    entry["records"] = records
    if mark:
        entry[pii.MARK] = mark
    return entry


def _users(n: int = 10) -> list:
    return [pii.protect(make_bad_user(i, i) if i % 3 == 0 else make_user(i)) for i in range(1, n + 1)]


def _processed(client, keys: Keys) -> list[dict]:
    return [orjson.loads(f[b"data"]) for _, f in client.xrange(keys.processed_stream)]


def test_an_entry_handled_twice_is_tallied_once_and_phase2_announced_once(client, redis_server):
    w = _worker(client, redis_server)
    for page in range(2):
        client.xadd(w.keys.raw_stream, streams.encode(_page(page, _users())))
    client.xadd(w.keys.raw_stream, streams.encode({"kind": "end", "run_id": "r1", "run_ts": RUN_TS, "pages": 2}))
    entries = w.reader.read(10)
    assert len(entries) == 3
    # Each entry handled twice, as when a consumer that claimed it and the first one both finish it.
    for entry in [*entries, *entries]:
        w.handle(entry)
    # The saver loads a page once however often it comes (tests/integration/test_pipeline.py).
    assert sorted(p["page"] for p in _processed(client, w.keys)) == [0, 0, 1, 1]
    assert client.xlen(w.keys.raw_stream) == 0
    assert client.xpending(w.keys.raw_stream, w.reader.group)["pending"] == 0
    assert client.hgetall(w.keys.run_pages("r1")) == {b"0": b"7,3", b"1": b"7,3"}
    events = [orjson.loads(f[b"data"]) for _, f in client.xrange(w.keys.events_stream)]
    assert [(e["type"], e["valid_count"], e["invalid_count"]) for e in events] == [("phase2_complete", 14, 6)]


@pytest.mark.parametrize(
    ("policy", "mark", "change"),
    [
        ("evolve", "mask", None),  # as they came: the entry's own text goes on
        ("evolve", None, None),  # no mark: protected again, unchanged since already masked
        ("evolve", None, "secret"),  # no mark and a secret: masked anew
        ("evolve", "mask", "quarantined"),  # a quarantined record: its text is the raw copy
        ("discard_value", "mask", "drift"),  # values dropped by the contract
        ("freeze", "mask", "drift"),
    ],
)
def test_the_processed_page_is_the_one_its_records_make(client, redis_server, policy, mark, change):
    """Whether or not the records' text is reused, the processed page decodes to what transform_page gives."""
    w = _worker(client, redis_server, policy)
    records = _users()
    if change == "secret":
        records[1] = {**records[1], "ssn": "123-45-6789", "password": "hunter2"}
    elif change == "quarantined":
        records[2] = {"$unreadable": {"reason": "NaN in age", "text": '{"age": NaN, "ssn": "****6789"}'}}
    elif change == "drift":
        records[3] = {**records[3], "nickname": "Em", "age": "41"}
    client.xadd(w.keys.raw_stream, streams.encode(_page(0, records, mark)))
    for entry in w.reader.read(10):
        w.handle(entry)
    expected = transform_page(
        copy.deepcopy(records),
        w.departments,
        contract=load_contract("", policy),
        protected=mark == "mask",
    )
    (out,) = _processed(client, w.keys)
    assert {k: out[k] for k in expected} == orjson.loads(orjson.dumps(expected))
    assert b"hunter2" not in orjson.dumps(out) and b"123-45-6789" not in orjson.dumps(out)
    if change == "drift" and policy == "discard_value":
        assert "nickname" not in out["raw"][3] and "age" not in out["raw"][3]
