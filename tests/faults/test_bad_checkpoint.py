"""A checkpoint the extractor cannot read (a half-written hash, a value of another type, a field of an older
version): `python -m extractor once` must say which key is unreadable and what to do, never a traceback."""

import time

import pytest

from tests.faults.conftest import wait_for

CHECKPOINTS = {
    "next_skip not a number": {"run_id": "20260101_000000_abcdef", "next_skip": "abc"},
    "only next_skip": {"next_skip": "20"},
    "an unknown field only": {"version_of_the_future": "1"},
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_an_unreadable_checkpoint_is_named_with_the_next_step(make_source, make_pipeline, name):
    p = make_pipeline(make_source(count=30), ETL_PAGE_SIZE="10")
    p.redis.hset(p.keys.checkpoint, mapping=CHECKPOINTS[name])
    done = p.extract()
    said = done.stdout + done.stderr
    assert "Traceback" not in said, said[-3000:]
    assert done.returncode != 0 and p.keys.checkpoint in said, said[-3000:]


def test_the_serving_extractor_names_an_unreadable_checkpoint_instead_of_dying(make_source, make_pipeline):
    """At start the service resumes the unfinished run: a bad checkpoint must not end it with a traceback (under
    Kubernetes, a crash loop), but be named, with the key, while the service goes on serving."""
    p = make_pipeline(make_source(count=30), ETL_PAGE_SIZE="10")
    p.redis.hset(p.keys.checkpoint, mapping=CHECKPOINTS["next_skip not a number"])
    extractor = p.start("extractor")
    wait_for(lambda: "extractor ready" in extractor.output(), what="the extractor ready")
    time.sleep(3)  # the resume at start has run by now
    try:
        assert extractor.popen.poll() is None, extractor.output()[-3000:]
        assert "Traceback" not in extractor.output() and p.keys.checkpoint in extractor.output()
    finally:
        extractor.stop()
