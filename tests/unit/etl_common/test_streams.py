"""GroupReader on a real redis-server: new entries, own backlog after a restart, claims, acks and dead letters."""

import uuid

import orjson
import pytest
import redis

from etl_common import streams
from etl_common.errors import PermanentError
from etl_common.keys import Keys


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


@pytest.fixture
def keys() -> Keys:
    """A fresh key prefix per test."""
    return Keys(f"t{uuid.uuid4().hex[:8]}:")


def _reader(client, keys: Keys, consumer: str, **kw) -> streams.GroupReader:
    reader = streams.GroupReader(client, "g", consumer, [keys.raw_stream], block_ms=10, keys=keys, **kw)
    reader.setup()
    return reader


def _add(client, keys: Keys, run_id: str, page: int) -> str:
    return client.xadd(keys.raw_stream, streams.encode({"run_id": run_id, "page": page})).decode()


def test_new_entries_are_delivered_once_and_ack_deletes_them(client, keys):
    reader = _reader(client, keys, "a")
    ids = [_add(client, keys, "r1", page) for page in range(3)]
    got = reader.read(10)
    assert [e.id for e in got] == ids and all(e.deliveries == 1 for e in got)
    assert [streams.decode(e.fields)[0]["page"] for e in got] == [0, 1, 2]
    assert reader.read(10) == []  # nothing new; the three wait in this consumer's pending list
    reader.ack(got[:2])
    assert client.xlen(keys.raw_stream) == 1
    assert client.xpending(keys.raw_stream, "g")["pending"] == 1
    reader.ack(got[2:], delete=False)
    assert client.xlen(keys.raw_stream) == 1 and client.xpending(keys.raw_stream, "g")["pending"] == 0


def test_a_restarted_consumer_reads_its_own_pending_entries_first(client, keys):
    first = _reader(client, keys, "a")
    (pending_id,) = [_add(client, keys, "r1", 0)]
    assert [e.id for e in first.read(10)] == [pending_id]  # read, then the process dies before the ack
    new_id = _add(client, keys, "r1", 1)
    again = _reader(client, keys, "a")  # same name: the pod name survives a restart
    backlog = again.read(10)
    assert [(e.id, e.deliveries) for e in backlog] == [(pending_id, 2)]
    # Until the backlog is empty it is read again (each time one more delivery), then the new entries.
    assert [(e.id, e.deliveries) for e in again.read(10)] == [(pending_id, 3)]
    again.ack(backlog)
    assert [e.id for e in again.read(10)] == [new_id]


def test_entries_idle_in_another_consumer_are_claimed_with_their_delivery_count(client, keys):
    dead = _reader(client, keys, "dead")
    entry_id = _add(client, keys, "r1", 0)
    assert [e.id for e in dead.read(10)] == [entry_id]
    # claim_idle_ms=0: any entry another consumer holds is claimable, so no waiting is needed.
    alive = _reader(client, keys, "alive", claim_idle_ms=0)
    claimed = alive.read(10)
    assert [(e.id, e.deliveries, e.stream) for e in claimed] == [(entry_id, 2, keys.raw_stream)]
    owners = client.xpending_range(keys.raw_stream, "g", min="-", max="+", count=10)
    assert [o["consumer"] for o in owners] == [b"alive"]


def test_an_entry_deleted_while_pending_is_dropped_not_delivered(client, keys):
    dead = _reader(client, keys, "dead")
    entry_id = _add(client, keys, "r1", 0)
    dead.read(10)
    client.xdel(keys.raw_stream, entry_id)
    alive = _reader(client, keys, "alive", claim_idle_ms=0)
    assert alive.read(10) == []
    assert client.xpending(keys.raw_stream, "g")["pending"] == 0


def test_dead_letter_copies_the_entry_with_its_reason_counts_it_per_run_then_acks(client, keys):
    reader = _reader(client, keys, "a", max_deliveries=2)
    _add(client, keys, "run-7", 3)
    (entry,) = reader.read(10)
    reader.dead_letter(entry, "x" * 3000)
    ((_, fields),) = client.xrange(keys.dead_stream)
    assert fields[b"run_id"] == b"run-7" and fields[b"group"] == b"g" and fields[b"id"] == entry.id.encode()
    assert fields[b"stream"] == keys.raw_stream.encode() and fields[b"deliveries"] == b"1"
    assert fields[b"reason"] == b"x" * 2000  # bounded
    assert streams.decode({b"data": fields[b"f:data"]})[0] == {"run_id": "run-7", "page": 3}
    assert client.hgetall(keys.dead_counts) == {b"run-7": b"1"}
    assert client.xlen(keys.raw_stream) == 0 and client.xpending(keys.raw_stream, "g")["pending"] == 0


def test_entries_that_are_not_ours_are_counted_under_unknown(client, keys):
    reader = _reader(client, keys, "a")
    client.xadd(keys.raw_stream, {"something": "else"})
    (entry,) = reader.read(10)
    reader.dead_letter(entry, "entry has no 'data' field")
    assert client.hgetall(keys.dead_counts) == {b"unknown": b"1"}
    ((_, fields),) = client.xrange(keys.dead_stream)
    assert fields[b"f:something"] == b"else" and fields[b"run_id"] == b""


def test_too_many_deliveries_is_above_the_configured_maximum(client, keys):
    reader = _reader(client, keys, "a", max_deliveries=2)
    entry = streams.Entry(keys.raw_stream, "1-0", {}, deliveries=2)
    assert not reader.too_many_deliveries(entry)
    entry.deliveries = 3
    assert reader.too_many_deliveries(entry)


def test_setup_twice_is_harmless_and_only_busygroup_is_accepted(client, keys):
    reader = _reader(client, keys, "a")
    reader.setup()  # BUSYGROUP: the group exists already
    client.set(f"{keys.prefix}not-a-stream", "x")
    with pytest.raises(redis.ResponseError):
        streams.ensure_group(client, f"{keys.prefix}not-a-stream", "g")


def _fields(data: bytes) -> dict[bytes, bytes]:
    return {b"data": data, b"traceparent": b"00-0af7651916cd43dd8448eb211c19319c-b7ad6b7169203331-01"}


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "page", "run_id": "r1", "records": [{"a": 1, "b": [1, 2]}, "x", None], "pii": "mask"},
        {"records": []},
        {"records": [[1, "]"]], "after": {"n": 1}},
        {"before": {"x": "[{"}, "records": [{"records": [1]}]},
    ],
)
def test_decode_keeping_cuts_out_the_array_text_of_an_entry_encode_wrote(payload):
    data = streams.encode(payload)["data"]
    assert isinstance(data, bytes)
    got, tp, text = streams.decode_keeping(_fields(data), "records")
    assert got == payload and list(got) == list(payload) and tp is not None and tp.startswith("00-")
    assert text is not None and orjson.loads(text) == payload["records"]
    # Put back in place of the records, the text gives the entry's very bytes.
    assert orjson.dumps({**payload, "records": orjson.Fragment(text)}) == data


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind": "page", "records": [1, 2], "pii": "mask"}',  # white space: not what encode writes
        b'{"records":[1],"pii":"x","records":[2]}',  # the key twice: the last one is the value
        b'{"records":[1],"pii":"x","records":null}',
        b'{"meta":{"records":[9]},"records":[1]}',  # the first match is nested
        b'{"a\\"records":[1],"records":[2]}',  # the first match is inside another key
        b'{"records":[1],"pii":"]"}',  # a bracket after the array: not cut out (the last one ends it)
        b'{"records":[1],"after":{"n":[1]}}',
        b'{"records":{"a":[1]}}',  # not an array
        b'{"records":[1],"x":1.0e2}',  # the rest not as encode writes it
        b'{"records":[1,2}',
        b'["records":[1]]',
    ],
)
def test_decode_keeping_decodes_any_other_entry_whole(data):
    try:
        expected = streams.decode(_fields(data))[0]
    except PermanentError as exc:
        with pytest.raises(PermanentError, match=str(exc)[:20]):
            streams.decode_keeping(_fields(data), "records")
        return
    got, _, text = streams.decode_keeping(_fields(data), "records")
    assert got == expected and list(got) == list(expected)
    if text is not None:  # cut out only where it is the value decode gives
        assert orjson.loads(text) == expected["records"]
