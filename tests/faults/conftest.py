"""Helpers of the fault-injection suite: exact checks of a run against the source's data set."""

import math
import sqlite3
import time

import orjson
import pytest

from tests.support import Pipeline, lines


def wait_for(predicate, timeout_s: float = 30, what: str = "condition", step_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def loaded_pages(p: Pipeline) -> int:
    if not p.db_path.exists():
        return 0
    try:
        with p.db() as db:
            return db.execute("SELECT count(*) FROM loaded_pages").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def transformed_pages(p: Pipeline) -> int:
    """Pages the transformers have handed on (the Lua tally of every run under this prefix)."""
    total = 0
    for key in p.redis.scan_iter(f"{p.prefix}run:*:pages"):
        total += p.redis.hlen(key)
    return total


def assert_exact(p: Pipeline, run, valid_ids: list[int], invalid_count: int = 0, page_size: int = 100) -> None:
    """Every fetched record exactly once in processed or invalid users; files equal the tables, locally and on SFTP."""
    rid = run["run_id"]
    total = len(valid_ids) + invalid_count
    assert run["status"] == "succeeded", dict(run)
    assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (total, len(valid_ids), invalid_count)
    assert p.count("raw_users", rid) == total
    assert p.count("invalid_users", rid) == invalid_count
    got = p.user_ids("processed_users", rid)
    assert len(got) == len(set(got)), "duplicated users in processed_users"
    assert sorted(got) == sorted(valid_ids)
    with p.db() as db:
        assert db.execute("SELECT count(*) FROM loaded_pages WHERE run_id=?", (rid,)).fetchone()[0] == math.ceil(
            total / page_size
        )
        for key, table in (("raw_file", "raw_users"), ("processed_file", "processed_records")):
            rows = [
                orjson.loads(r[0])
                for r in db.execute(f"SELECT record FROM {table} WHERE run_id=? ORDER BY page, position", (rid,))
            ]
            assert lines(p.data_dir / run[key]) == rows
        assert len(lines(p.data_dir / run["dlq_file"])) == invalid_count
    for key in ("raw_file", "processed_file", "dlq_file"):
        assert (p.upload_dir / run[key]).read_bytes() == (p.data_dir / run[key]).read_bytes()


@pytest.fixture
def slow_source(make_source):
    """A generated source whose pages after the first take ``delay_s`` each, so kill points can be chosen."""

    def make(count: int = 600, delay_s: float = 0.3, **kw):
        src = make_source(count=count, **kw)
        src.faults([{"skip": None, "delay_s": delay_s, "status": 200, "times": -1}])
        return src

    return make


@pytest.fixture
def stopwatch(request):
    """Marks the fault; at the end prints how long the run took to succeed after it (see docs/reliability.md)."""
    marks: dict[str, float] = {}

    class Watch:
        def fault(self) -> None:
            marks["fault"] = time.monotonic()

        def recovered(self) -> None:
            marks["recovered"] = time.monotonic()

    yield Watch()
    if "fault" in marks and "recovered" in marks:
        print(f"\n[recovery] {request.node.name}: {marks['recovered'] - marks['fault']:.2f}s from fault to succeeded")
