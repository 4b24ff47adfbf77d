"""Several savers on one PostgreSQL database: the consumer group spreads the pages, one saver finishes the run."""

import orjson

from tests.support import lines


def test_two_savers_load_one_run_and_exactly_one_finishes_it(make_source, make_pipeline, postgres_server):
    source = make_source(count=1000, bad_every=25)  # ten pages of 100 users; 40 invalid
    p = make_pipeline(source, ETL_DATABASE_URL=postgres_server.create_database())
    # Both ready (groups made, reading) before the first page exists: the group hands pages to each in turn.
    for name in ("saver-a", "saver-b"):
        p.stack.start("saver", tag=name, **p.env(ETL_CONSUMER_NAME=name, ETL_BATCH_PAGES="1"))
    p.start("transformer")
    assert p.extract().returncode == 0
    run = p.wait_run(timeout_s=90)
    run_id = run["run_id"]
    assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (1000, 960, 40)
    assert p.count("raw_users", run_id) == 1000
    assert p.count("processed_users", run_id) == 960
    assert p.count("invalid_users", run_id) == 40
    with p.db() as db:
        assert db.execute("SELECT count(*) FROM loaded_pages WHERE run_id=?", (run_id,)).fetchone()[0] == 10
        quality = db.execute("SELECT report FROM run_quality WHERE run_id=?", (run_id,)).fetchone()
        files = db.execute("SELECT kind, records, uploaded_at FROM uploaded_files WHERE run_id=?", (run_id,)).fetchall()
    assert sorted((f["kind"], f["records"]) for f in files) == [("dlq", 40), ("processed", 960), ("raw", 1000)]
    assert all(f["uploaded_at"] for f in files)
    assert quality is not None, p.logs()  # the quality report's child read PostgreSQL
    assert orjson.loads(quality[0])["records"] == 1000
    # The uploaded files are the tables' rows, whichever saver loaded which page.
    assert len(lines(p.upload_dir / run["raw_file"])) == 1000
    assert len(lines(p.upload_dir / run["processed_file"])) == 960
    assert len(lines(p.upload_dir / run["dlq_file"])) == 40
    logs = {name: (p.logdir / f"{name}.log").read_text() for name in ("saver-a", "saver-b")}
    loaded = {name: text.count("page loaded") for name, text in logs.items()}
    assert sum(loaded.values()) == 10 and all(loaded.values()), loaded  # each page once, both savers at work
    assert sum(text.count("run succeeded") for text in logs.values()) == 1, p.logs()
