"""The workers built in this process (``make_worker``) handle real stream entries against a real redis-server."""

import sqlite3
from contextlib import closing

from dummyjson.users import make_bad_user, make_user
from etl_common import streams
from etl_common.db import connect_reader

RUN_ID, RUN_TS = "20260101_030000_abcdef", "20260101_030000"


def _users(good: int, bad: int) -> list[dict]:
    """``good`` valid users then ``bad`` broken ones (each breaks a rule of a different kind)."""
    return [make_user(i) for i in range(1, good + 1)] + [make_bad_user(good + 1 + k, k) for k in range(bad)]


def _entries(client, stream: str) -> list[dict]:
    return [streams.decode(fields)[0] for _, fields in client.xrange(stream)]


def _raw_page(worker, page: int, users: list[dict]) -> None:
    """A raw page as the extractor hands it on."""
    entry = {"kind": "page", "run_id": RUN_ID, "run_ts": RUN_TS, "page": page, "skip": page * 100, "total": len(users)}
    worker.client.xadd(worker.keys.raw_stream, streams.encode({**entry, "records": users}))


def test_a_transformer_worker_turns_a_raw_page_into_a_processed_page_and_announces_phase_2(make_worker):
    transformer = make_worker("transformer")
    transformer.reader.setup()
    _raw_page(transformer, 0, _users(4, 2))
    transformer.turn()
    (processed,) = _entries(transformer.client, transformer.keys.processed_stream)
    assert (processed["run_id"], processed["page"]) == (RUN_ID, 0)
    # Each record crosses once (``raw``); the valid and invalid ones refer to it by position.
    assert [u["id"] for u in processed["raw"]] == [1, 2, 3, 4, 5, 6]
    assert [r["pos"] for r in processed["valid"]] == [0, 1, 2, 3]
    assert [r["pos"] for r in processed["invalid"]] == [4, 5] and all(r["error_reason"] for r in processed["invalid"])
    # Acked and deleted in the same transaction as the output: nothing left to redeliver.
    assert transformer.client.xlen(transformer.keys.raw_stream) == 0
    assert _entries(transformer.client, transformer.keys.events_stream) == []  # the run's end is not known yet
    transformer.client.xadd(
        transformer.keys.raw_stream,
        streams.encode({"kind": "end", "run_id": RUN_ID, "run_ts": RUN_TS, "pages": 1, "records": 6}),
    )
    transformer.turn()
    (event,) = _entries(transformer.client, transformer.keys.events_stream)
    assert event["type"] == "phase2_complete" and (event["valid_count"], event["invalid_count"]) == (4, 2)


def test_a_transformer_worker_dead_letters_an_entry_it_cannot_read_and_fails_its_run(make_worker):
    transformer = make_worker("transformer")
    transformer.reader.setup()
    transformer.client.xadd(transformer.keys.raw_stream, streams.encode({"kind": "photo", "run_id": RUN_ID}))
    transformer.turn()
    assert transformer.client.xlen(transformer.keys.processed_stream) == 0
    ((_, dead),) = transformer.client.xrange(transformer.keys.dead_stream)
    assert b"unknown entry kind 'photo'" in dead[b"reason"] and dead[b"run_id"] == RUN_ID.encode()
    assert transformer.client.xlen(transformer.keys.raw_stream) == 0
    (event,) = _entries(transformer.client, transformer.keys.events_stream)
    assert event["type"] == "run_failed" and event["run_id"] == RUN_ID and "photo" in event["error"]


def test_a_saver_worker_loads_a_transformed_page_into_sqlite(make_worker):
    transformer = make_worker("transformer")
    saver = make_worker("saver", key_prefix=transformer.settings.key_prefix)
    transformer.reader.setup()
    saver.reader.setup()
    started = {"type": "run_started", "run_id": RUN_ID, "run_ts": RUN_TS, "trigger": "test"}
    saver.client.xadd(saver.keys.events_stream, streams.encode({**started, "started_at": "2026-01-01T03:00:00Z"}))
    _raw_page(transformer, 0, _users(3, 1))
    transformer.turn()
    saver.turn()
    with closing(connect_reader(saver.settings.db_path)) as db:
        db.row_factory = sqlite3.Row
        run = db.execute("SELECT * FROM etl_runs WHERE run_id=?", (RUN_ID,)).fetchone()
        assert (run["status"], run["trigger"]) == ("running", "test")
        assert db.execute("SELECT count(*) FROM raw_users WHERE run_id=?", (RUN_ID,)).fetchone()[0] == 4
        ids = [
            r[0] for r in db.execute("SELECT user_id FROM processed_users WHERE run_id=? ORDER BY user_id", (RUN_ID,))
        ]
        assert ids == [1, 2, 3]
        assert [r["page"] for r in db.execute("SELECT page FROM loaded_pages WHERE run_id=?", (RUN_ID,))] == [0]
    # The page is acked and deleted once committed: a restarted saver would not load it again.
    assert saver.client.xlen(saver.keys.processed_stream) == 0


def test_an_extractor_service_hands_a_local_sources_pages_on(make_worker, make_source):
    source = make_source(count=250)
    extractor = make_worker("extractor", source_url=source.url, page_size=100)
    assert extractor.extract("test")
    pages = _entries(extractor.client, extractor.keys.raw_stream)
    assert [(p["kind"], p.get("page")) for p in pages] == [("page", 0), ("page", 1), ("page", 2), ("end", None)]
    assert [len(p["records"]) for p in pages[:3]] == [100, 100, 50]
    events = [e["type"] for e in _entries(extractor.client, extractor.keys.events_stream)]
    assert events[0] == "run_started" and "phase1_complete" in events
