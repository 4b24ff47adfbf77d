"""The run lease's fenced write on a real Redis: one script that writes only for the current token and run."""

import secrets

import pytest
import redis

from etl_common.keys import Keys
from extractor.lease import Lease, LeaseLost


@pytest.fixture
def client(redis_server):
    with redis.Redis.from_url(redis_server.url) as c:
        yield c


def started(client, ttl_s=30.0) -> Lease:
    """A lease taken under a fresh key prefix, with run r1 in the checkpoint."""
    keys = Keys(f"lease-{secrets.token_hex(4)}:")
    lease = Lease(client, keys, ttl_s, 0)
    assert lease.acquire()
    lease.write([["HSET", keys.checkpoint, "run_id", "r1"]], None)
    return lease


def test_the_write_runs_its_commands_in_order_and_returns_their_replies(client):
    lease = started(client)
    keys = lease.keys
    replies = lease.write([["APPEND", keys.checkpoint_ids, b"[1]\n"], ["XLEN", keys.raw_stream]], "r1")
    assert replies == [4, 0]
    assert client.get(keys.checkpoint_ids) == b"[1]\n"


def test_a_write_of_a_lease_taken_over_is_refused_and_writes_nothing(client):
    late = started(client, ttl_s=0.2)
    keys = late.keys
    client.delete(keys.extract_lock)  # the lease lapsed
    taker = Lease(client, keys, 30, 0)
    assert taker.acquire()
    with pytest.raises(LeaseLost, match="another extractor took the run lease"):
        late.write([["SET", keys.checkpoint_ids, "late"]], "r1")
    with pytest.raises(LeaseLost):
        late.renew()
    assert client.get(keys.checkpoint_ids) is None
    assert taker.write([["SET", keys.checkpoint_ids, "taker"]], "r1") == [b"OK"]


@pytest.mark.parametrize("stored", [None, "r2"])
def test_a_write_for_a_run_no_longer_in_progress_is_refused(client, stored):
    lease = started(client)
    keys = lease.keys
    client.delete(keys.checkpoint)
    if stored:
        client.hset(keys.checkpoint, "run_id", stored)
    with pytest.raises(LeaseLost, match="r1 is no longer the run in progress"):
        lease.write([["SET", keys.checkpoint_ids, "x"]], "r1")
    assert client.get(keys.checkpoint_ids) is None


def test_a_start_is_refused_while_a_run_is_in_progress(client):
    lease = started(client)
    keys = lease.keys
    with pytest.raises(LeaseLost):
        lease.write([["SET", keys.checkpoint_ids, "x"]], None)
    assert client.get(keys.checkpoint_ids) is None


def test_the_write_renews_the_lease_and_takes_a_lapsed_one_nobody_took_back(client):
    lease = started(client, ttl_s=5)
    keys = lease.keys
    client.pexpire(keys.extract_lock, 100)
    lease.write([], "r1")
    assert client.pttl(keys.extract_lock) > 4000
    client.delete(keys.extract_lock)  # lapsed, nobody took it: the fence is still this lease's
    lease.write([["SET", keys.checkpoint_ids, "x"]], "r1")
    assert client.get(keys.extract_lock) == lease.lock.local.token and client.get(keys.checkpoint_ids) == b"x"


def test_a_lock_held_by_another_refuses_the_write(client):
    lease = started(client)
    keys = lease.keys
    client.set(keys.extract_lock, "someone else")  # took the lock, has not taken its token yet
    with pytest.raises(LeaseLost, match="another extractor holds the run lock"):
        lease.write([["SET", keys.checkpoint_ids, "x"]], "r1")
    assert client.get(keys.checkpoint_ids) is None
