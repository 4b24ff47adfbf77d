"""The transformer protects every raw page that does not carry its own policy's mark: no mark, no trust."""

import orjson
import pytest

from etl_common import pii, streams


@pytest.mark.parametrize("mark", [None, "keep"], ids=["no mark", "another policy's mark"])
def test_a_raw_page_not_marked_with_the_policy_is_protected_by_the_transformer(make_source, make_pipeline, mark):
    src = make_source(count=150)
    p = make_pipeline(src)
    assert p.extract().returncode == 0  # workers down: the pages wait in the raw stream
    secrets: list[str] = []
    for entry_id, fields in p.redis.xrange(p.keys.raw_stream):
        payload, tp = streams.decode(fields)
        if payload["kind"] != "page":
            continue
        assert payload[pii.MARK] == "mask"  # what the extractor writes
        # The page as a producer that does not protect would write it: the source's records, secrets and all.
        users = [src.source.user(payload["skip"] + i) for i in range(len(payload["records"]))]
        assert all(u["password"] and u["ssn"] for u in users)
        secrets += [u["password"] for u in users] + [u["ssn"] for u in users] + [u["bank"]["iban"] for u in users]
        payload = {k: v for k, v in payload.items() if k != pii.MARK} | {"records": users}
        if mark is not None:
            payload[pii.MARK] = mark
        p.redis.xadd(p.keys.raw_stream, streams.encode(payload, tp))
        p.redis.xdel(p.keys.raw_stream, entry_id)
    p.start_workers()
    run = p.wait_run()
    assert (run["raw_count"], run["valid_count"]) == (150, 150)
    with p.db() as db:
        union = "SELECT record FROM raw_users UNION ALL SELECT record FROM processed_records"
        stored = [r[0] for r in db.execute(union)]
    assert len(stored) == 300
    text = "\n".join(stored) + "".join(f.read_text() for f in p.data_dir.rglob("*.jsonl"))
    assert not [s for s in secrets if s in text]
    records = [orjson.loads(r) for r in stored]
    assert all(r["ssn"].startswith("*") and "password" not in r for r in records)
