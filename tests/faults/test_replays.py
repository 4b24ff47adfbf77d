"""Redelivered pages, replayed events and poison entries: nothing doubles, nothing is retried forever."""

import time

import orjson

from tests.faults.conftest import assert_exact, wait_for


def test_same_pages_and_whole_run_replayed_nothing_doubles(make_source, make_pipeline):
    src = make_source(count=250)
    p = make_pipeline(src)
    assert p.extract().returncode == 0
    raw_entries = p.redis.xrange(p.keys.raw_stream)
    assert len(raw_entries) == 4
    # Every raw page is delivered twice before any worker runs.
    for _, fields in raw_entries[:3]:
        p.redis.xadd(p.keys.raw_stream, fields)
    pubsub = p.redis.pubsub()
    pubsub.subscribe("channel:phase2_complete", "channel:phase3_complete")
    p.start_workers()
    run = p.wait_run()
    assert_exact(p, run, list(range(1, 251)))
    files_before = {f: (p.data_dir / run[f]).read_bytes() for f in ("raw_file", "processed_file", "dlq_file")}
    # Replay the whole run: every raw entry and every lifecycle event again.
    for _, fields in raw_entries:
        p.redis.xadd(p.keys.raw_stream, fields)
    for _, fields in p.redis.xrange(p.keys.events_stream):
        p.redis.xadd(p.keys.events_stream, fields)
    wait_for(
        lambda: p.redis.xlen(p.keys.raw_stream) == 0 and p.redis.xlen(p.keys.processed_stream) == 0,
        what="replay consumed",
    )
    time.sleep(1.0)
    again = p.wait_run()
    assert_exact(p, again, list(range(1, 251)))
    assert again["finished_at"] == run["finished_at"]
    assert {f: (p.data_dir / run[f]).read_bytes() for f in files_before} == files_before
    messages = []
    while (m := pubsub.get_message(timeout=0.2)) is not None:
        if m["type"] == "message":
            messages.append(m["channel"].decode())
    assert messages.count("channel:phase2_complete") == 1
    assert messages.count("channel:phase3_complete") == 1


def test_poison_entries_are_dead_lettered_not_retried_forever(make_source, make_pipeline):
    src = make_source(count=120)
    p = make_pipeline(src)
    p.start_workers()
    p.redis.xadd(p.keys.raw_stream, {"data": b"{not json"})
    p.redis.xadd(p.keys.raw_stream, {"nodata": b"x"})
    p.redis.xadd(p.keys.raw_stream, {"data": orjson.dumps({"kind": "page", "run_id": "r1"})})
    p.redis.xadd(p.keys.processed_stream, {"data": orjson.dumps({"run_id": "r2", "page": 0})})
    p.redis.xadd(
        p.keys.processed_stream,
        {
            "data": orjson.dumps(
                {"run_id": "r3", "run_ts": "not-a-timestamp", "page": 0, "raw": [], "valid": [], "invalid": []}
            )
        },
    )
    # A valid record pointing past the page's raw records.
    bad_pos = {
        "run_id": "r4",
        "run_ts": "20261125_030000",
        "page": 0,
        "raw": [],
        "invalid": [],
        "valid": [{"pos": 5, "department_code": "ENG"}],
    }
    p.redis.xadd(p.keys.processed_stream, {"data": orjson.dumps(bad_pos)})
    assert p.extract().returncode == 0
    run = p.wait_run()
    assert_exact(p, run, list(range(1, 121)))
    dead = wait_for(lambda: (d := p.redis.xrange(p.keys.dead_stream)) and len(d) >= 6 and d, what="6 dead letters")
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert any("not JSON" in r for r in reasons)
    assert any("no 'data' field" in r for r in reasons)
    assert any("malformed entry: KeyError" in r for r in reasons)
    assert any("lacks 'run_ts'" in r for r in reasons)
    assert any("page cannot be loaded" in r or "malformed entry: ValueError" in r for r in reasons)
    assert any("page cannot be loaded: IndexError" in r for r in reasons)
    assert p.redis.xlen(p.keys.raw_stream) == 0 and p.redis.xlen(p.keys.processed_stream) == 0
    assert p.procs["transformer"].alive() and p.procs["saver"].alive()
    counts = {k.decode(): int(v) for k, v in p.redis.hgetall(p.keys.dead_counts).items()}
    assert counts.get("r2") == 1 and counts.get("r3") == 1 and counts.get("r4") == 1 and sum(counts.values()) == 6
