"""Reading the run checkpoint on a real Redis: a hash this version did not write is named, never a traceback,
and an extraction that meets one fails its run for good and deletes it, so the next run starts afresh."""

import secrets

import pytest
import redis

from etl_common.keys import Keys
from etl_common.streams import decode
from extractor import run
from extractor.checkpoint import Checkpoint, SeenIds
from extractor.errors import CheckpointUnreadable
from extractor.settings import ExtractorSettings

GOOD = {
    "run_id": "20260101_000000_abcdef",
    "run_ts": "20260101_000000",
    "started_at": "2026-01-01T00:00:00Z",
    "trigger": "manual",
    "raw_file": "raw.json",
    "next_skip": "20",
}

BAD = {
    "an integer field of text": ({**GOOD, "next_skip": "abc"}, "'next_skip' is not an integer"),
    "a float where an integer goes": ({**GOOD, "records": "1.5"}, "'records' is not an integer"),
    "a negative count": ({**GOOD, "next_page": "-3"}, "'next_page' is negative"),
    "a run stamp of another shape": ({**GOOD, "run_ts": "yesterday"}, "'run_ts' is not a run stamp"),
    "an empty run id": ({**GOOD, "run_id": ""}, "'run_id' is empty"),
    "a required field missing": ({k: v for k, v in GOOD.items() if k != "raw_file"}, "'raw_file' missing"),
    "an unknown field": ({**GOOD, "from_a_newer_version": "1"}, "unknown field 'from_a_newer_version'"),
}


@pytest.fixture
def client(redis_server):
    with redis.Redis.from_url(redis_server.url) as c:
        yield c


@pytest.fixture
def keys() -> Keys:
    return Keys(f"cp-{secrets.token_hex(4)}:")


def test_a_checkpoint_this_version_wrote_reads_back(client, keys):
    client.hset(keys.checkpoint, mapping=GOOD)
    cp = Checkpoint.load(client, keys.checkpoint)
    assert cp is not None and cp.next_skip == 20 and cp.run_id == GOOD["run_id"]


@pytest.mark.parametrize("name", list(BAD))
def test_an_unreadable_checkpoint_names_its_key_and_the_problem(client, keys, name):
    stored, problem = BAD[name]
    client.hset(keys.checkpoint, mapping=stored)
    with pytest.raises(CheckpointUnreadable) as raised:
        Checkpoint.load(client, keys.checkpoint)
    assert keys.checkpoint in str(raised.value) and problem in str(raised.value)
    assert f"redis-cli DEL {keys.checkpoint}" in str(raised.value)


@pytest.mark.parametrize("stored", [b"not json\n", b'{"id": 1}\n', b"[1, 2]\n[[3]]\n"])
def test_unreadable_run_ids_name_their_key(client, keys, stored):
    client.set(keys.checkpoint_ids, stored)
    with pytest.raises(CheckpointUnreadable, match=keys.checkpoint_ids):
        SeenIds.load(client, keys.checkpoint_ids)


def test_an_extraction_meeting_an_unreadable_checkpoint_fails_its_run_and_deletes_it(client, keys, redis_server):
    client.hset(keys.checkpoint, mapping={**GOOD, "next_skip": "abc"})
    client.set(keys.checkpoint_ids, b"[1]\n")
    settings = ExtractorSettings(redis_url=redis_server.url, key_prefix=keys.prefix)
    with pytest.raises(CheckpointUnreadable):
        run.extract(settings, client, "manual")
    assert not client.exists(keys.checkpoint) and not client.exists(keys.checkpoint_ids)
    assert not client.exists(keys.extract_lock)
    events = [decode(fields)[0] for _, fields in client.xrange(keys.events_stream)]
    assert [(e["type"], e["run_id"]) for e in events] == [("run_failed", GOOD["run_id"])]
    assert keys.checkpoint in events[0]["error"]
