"""OpenLineage names the store's tables as its naming spec has them, on SQLite and PostgreSQL, never with a secret."""

import socket
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from openlineage.client.serde import Serde

from saver.lineage_events import build
from saver.settings import SaverSettings
from saver.store import Store
from tests.integration.test_lineage import Receiver, check

RUN_ID = "20261204_010203_abcdef"
TABLES = ["raw_users", "processed_users", "invalid_users"]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """(settings, store) of one engine, with one run."""
    if request.param == "sqlite":
        settings = SaverSettings(_env_file=None, db_path=str(tmp_path / "data.db"))
    else:
        url = request.getfixturevalue("postgres_server").create_database()
        settings = SaverSettings(_env_file=None, database_url=url)
    store = Store(settings.database())
    with store.transaction():
        store._ensure_run(RUN_ID, "20261204_010203")
    yield settings, store
    store.close()


def test_the_tables_are_named_by_the_openlineage_naming_spec(engine):
    settings, store = engine
    run = store.conn.execute("SELECT * FROM etl_runs WHERE run_id=?", (RUN_ID,)).fetchone()
    event = build(settings, store.conn, run, "COMPLETE")
    names = [(o.namespace, o.name) for o in event.outputs]
    database = settings.database()
    if database.engine == "sqlite":
        assert names == [(f"sqlite://{socket.gethostname()}{Path(settings.db_path).resolve()}", t) for t in TABLES]
    else:
        url = urlsplit(database.url)
        db = url.path.lstrip("/")
        assert names == [(f"postgres://127.0.0.1:{url.port}", f"{db}.public.{t}") for t in TABLES]
        text = Serde.to_json(event)
        assert url.password and url.password not in text and f"{url.username}@" not in text
        assert orjson.loads(text)["outputs"][0]["namespace"] == f"postgres://127.0.0.1:{url.port}"


def test_a_run_on_postgresql_names_its_tables_there(make_source, make_pipeline, postgres_server):
    """End to end: the saver on PostgreSQL sends COMPLETE naming the tables in the database, valid by the schemas."""
    receiver = Receiver()
    try:
        url = postgres_server.create_database()
        p = make_pipeline(make_source(count=30), ETL_DATABASE_URL=url, OPENLINEAGE_URL=receiver.url)
        p.start_workers()
        assert p.extract().returncode == 0
        assert p.wait_run()["status"] == "succeeded"
        complete = receiver.wait(2)[1]
    finally:
        receiver.stop()
    check(complete)
    parts = urlsplit(url)
    tables = {
        o["name"]: o["outputFacets"]["outputStatistics"]["rowCount"]
        for o in complete["outputs"]
        if o["namespace"] == f"postgres://127.0.0.1:{parts.port}"
    }
    db = parts.path.lstrip("/")
    assert tables == {f"{db}.public.raw_users": 30, f"{db}.public.processed_users": 30, f"{db}.public.invalid_users": 0}
    assert parts.password not in orjson.dumps(complete).decode()
