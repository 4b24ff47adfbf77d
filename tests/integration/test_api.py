"""The read API as a real process over a database written by real pipeline runs (Redis, SFTP, SQLite)."""

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

import testbed as tb
import testbed.postgres as tbpg
from dummyjson.server import Source
from etl_common.db import connect_reader
from tests.support import Pipeline, SourceServer, Stack, real_users

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TABLES = ("raw_users", "processed_users", "invalid_users")


class Api:
    """An API process and a client for it."""

    def __init__(self, pipeline: Pipeline, tag: str, **env: str) -> None:
        self.pipeline = pipeline
        self.engine = "postgresql" if "ETL_API_DATABASE_URL" in env else "sqlite"
        self.port = tb.free_port()
        self.proc = pipeline.start("api", tag=tag, ETL_API_PORT=str(self.port), **env)
        tb.wait_port(self.port, proc=self.proc.popen)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def get(self, url: str, auth: bool = True, headers: dict | None = None, **kw) -> httpx.Response:
        return self.client.get(url, headers={**(AUTH if auth else {}), **(headers or {})}, **kw)

    def sql(self, query: str, auth: bool = True) -> httpx.Response:
        return self.client.post("/query_sql", json={"query": query}, headers=AUTH if auth else {})


@contextlib.contextmanager
def api_over_one_run(tmp: Path, redis_server, sftp_server, source: Source, **env: str) -> Iterator[Api]:
    """The services load one run from ``source`` into a pipeline under ``tmp``; then an API over it (``env``)."""
    (tmp / "upload").mkdir()
    server = SourceServer(source).start()
    p = Pipeline(
        tmp / "p", redis_server.url, {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(tmp / "upload")}, server.url
    )
    try:
        p.start_workers()
        done = p.extract()
        assert done.returncode == 0, done.stdout + done.stderr
        p.wait_run(("succeeded",))
        api = Api(p, "api", **env)
        yield api
        api.client.close()
    finally:
        p.stop_all()
        server.stop()


@contextlib.contextmanager
def api_on_postgresql(sqlite_api: Api, request: pytest.FixtureRequest, **env: str) -> Iterator[Api]:
    """An API over a PostgreSQL copy of ``sqlite_api``'s database: the reader's role, the console's own role."""
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    tbpg.load_from_sqlite(sqlite_api.pipeline.db_path, url)
    reader, console = tbpg.make_roles(server, url)
    api = Api(sqlite_api.pipeline, "api-pg", ETL_API_DATABASE_URL=reader, ETL_API_SQL_DATABASE_URL=console, **env)
    api.database_url = url  # the owner's, for a test that writes as the saver would
    try:
        yield api
    finally:
        api.client.close()
        api.proc.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server, sftp_server):
    """Two real runs (the second with invalid records) loaded by the services, and API processes over them.

    Module-scoped because a pipeline run takes seconds and every test here only reads.
    """
    tmp = tmp_path_factory.mktemp("api")
    upload = tmp / "upload"
    upload.mkdir()
    sources = [SourceServer(Source(208, 0, 0, real_users())).start(), SourceServer(Source(150, 1, 10)).start()]
    p = Pipeline(tmp / "p", redis_server.url, {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(upload)}, sources[0].url)
    p.start_workers()
    try:
        runs = p.load_runs(sources)
        apis = {
            "token": Api(
                p,
                "api-token",
                ETL_API_CORS_ORIGINS="http://front.example",
                ETL_API_SQL_TIMEOUT_MS="500",
                ETL_API_SQL_MAX_ROWS="100",
            ),
            "open": Api(p, "api-open", ETL_API_AUTH="none"),
            "nodb": Api(p, "api-nodb", ETL_DB_PATH=str(tmp / "missing" / "data.db")),
        }
        yield Stack(p, runs, apis["token"], apis)
    finally:
        for a in locals().get("apis", {}).values():
            a.client.close()
        p.stop_all()
        for s in sources:
            s.stop()


class TestRuns:
    """GET /etl_runs and /etl_runs/{id}."""

    def test_lists_runs_newest_first_with_seed_fields_and_total(self, api, runs):
        r = api.get("/etl_runs")
        assert r.status_code == 200 and r.headers["X-Total-Count"] == "2"
        body = r.json()
        assert [b["run_id"] for b in body] == [runs[1]["run_id"], runs[0]["run_id"]]
        for field in (
            "id",
            "run_timestamp",
            "processed_file",
            "valid_count",
            "invalid_count",
            "run_id",
            "status",
            "trigger",
            "started_at",
            "finished_at",
            "raw_count",
            "files",
        ):
            assert field in body[0]
        assert (body[0]["valid_count"], body[0]["invalid_count"], body[0]["raw_count"]) == (135, 15, 150)
        assert (body[1]["valid_count"], body[1]["invalid_count"]) == (208, 0)
        assert {f["kind"] for f in body[0]["files"]} == {"raw", "processed", "dlq"}
        assert all(f["uploaded_at"] and isinstance(f["encrypted"], bool) for f in body[0]["files"])

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("limit=1", [1]),
            ("limit=1&offset=1", [0]),
            ("limit=2&offset=2", []),
            ("offset=5000", []),
            ("limit=1000", [1, 0]),
        ],
    )
    def test_paging_edges(self, api, runs, query, expected):
        r = api.get(f"/etl_runs?{query}")
        assert r.status_code == 200 and r.headers["X-Total-Count"] == "2"
        assert [b["run_id"] for b in r.json()] == [runs[i]["run_id"] for i in expected]

    @pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=abc", "status=done"])
    def test_bad_parameters_are_422(self, api, query):
        r = api.get(f"/etl_runs?{query}")
        assert r.status_code == 422 and "detail" in r.json()

    def test_status_filter(self, api):
        assert len(api.get("/etl_runs?status=succeeded").json()) == 2
        r = api.get("/etl_runs?status=failed")
        assert r.json() == [] and r.headers["X-Total-Count"] == "0"

    def test_one_run_by_id_or_run_id(self, api, runs):
        by_id = api.get(f"/etl_runs/{runs[0]['id']}").json()
        by_text = api.get(f"/etl_runs/{runs[0]['run_id']}").json()
        assert by_id == by_text
        assert by_id["run_id"] == runs[0]["run_id"] and by_id["status"] == "succeeded"
        assert by_id["pages_loaded"] == by_id["pages_expected"] == 3
        assert by_id["duration_s"] is not None and by_id["duration_s"] >= 0
        assert by_id["error"] is None and len(by_id["files"]) == 3
        assert by_id["dead_letters"] == 0

    @pytest.mark.parametrize("ref", ["999999", "no-such-run", "99999999999999999999999", "³", "-1"])
    def test_unknown_run_is_404(self, api, ref):
        r = api.get(f"/etl_runs/{ref}")
        assert r.status_code == 404 and "no run" in r.json()["detail"]


class TestRecords:
    """GET /data/{table}: run filter, paging, sorting, search, department filters, masking."""

    @pytest.mark.parametrize("table", TABLES)
    def test_run_filter_matches_the_database(self, api, pipeline, runs, table):
        for run in runs:
            r = api.get(f"/data/{table}", params={"run_id": run["run_id"], "limit": 500})
            body = r.json()
            assert body["total"] == pipeline.count(table, run["run_id"]) == int(r.headers["X-Total-Count"])
            assert len(body["items"]) == body["total"]
            assert {i["run_id"] for i in body["items"]} <= {run["run_id"]}
        assert api.get(f"/data/{table}").json()["total"] == sum(pipeline.count(table, r["run_id"]) for r in runs)

    def test_pages_are_stable_complete_and_in_source_order(self, api, pipeline, runs):
        run_id, seen, offset = runs[0]["run_id"], [], 0
        while True:
            items = api.get("/data/processed_users", params={"run_id": run_id, "limit": 37, "offset": offset}).json()
            if not items["items"]:
                break
            seen += [i["user_id"] for i in items["items"]]
            offset += 37
        assert seen == pipeline.user_ids("processed_users", run_id)
        assert len(set(seen)) == 208

    @pytest.mark.parametrize("table", TABLES)
    @pytest.mark.parametrize("limit", [1, 4, 37])
    def test_every_offset_gives_the_source_order(self, api, pipeline, runs, table, limit):
        """Pages of every size, in both orders, cover the run exactly (pages of invalid records are sparse)."""
        run_id = runs[1]["run_id"]
        expected = pipeline.user_ids(table, run_id)
        for order, want in (("asc", expected), ("desc", expected[::-1])):
            got = []
            for offset in range(0, len(expected) + limit, limit):
                got += [
                    i["user_id"]
                    for i in api.get(
                        f"/data/{table}", params={"run_id": run_id, "limit": limit, "offset": offset, "order": order}
                    ).json()["items"]
                ]
            assert got == want

    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("column", ["age", "last_name", "department_code", "user_id"])
    def test_sorting(self, api, runs, column, order):
        items = api.get(
            "/data/processed_users", params={"run_id": runs[0]["run_id"], "sort": column, "order": order, "limit": 500}
        ).json()["items"]
        values = [i[column] for i in items]
        assert values == sorted(values, reverse=order == "desc") and len(values) == 208

    def test_sort_on_an_untyped_or_unknown_column_is_422(self, api):
        for bad in ("record", "password", "department_code; drop table x"):
            assert api.get("/data/processed_users", params={"sort": bad}).status_code == 422
        assert api.get("/data/raw_users", params={"sort": "department_code"}).status_code == 422

    def test_search_on_name_email_username(self, api, runs):
        user = real_users()[4] if real_users() else None
        run_id = runs[0]["run_id"]
        needle = user["email"] if user else api.get("/data/processed_users?limit=1").json()["items"][0]["email"]
        found = api.get("/data/processed_users", params={"run_id": run_id, "q": needle[2:9].upper()}).json()
        assert found["total"] >= 1 and any(i["email"] == needle for i in found["items"])
        for item in found["items"]:
            text = " ".join(str(item[c]) for c in ("first_name", "last_name", "email", "username")).lower()
            assert needle[2:9].lower() in text
        assert api.get("/data/processed_users", params={"run_id": run_id, "q": "%"}).json()["total"] == 0

    def test_department_filters(self, api, pipeline, runs):
        run_id = runs[0]["run_id"]
        with pipeline.db() as db:
            expected = db.execute(
                "SELECT count(*) FROM processed_users WHERE run_id=? AND department_code='ENG'", (run_id,)
            ).fetchone()[0]
        by_code = api.get("/data/processed_users", params={"run_id": run_id, "department_code": "eng"}).json()
        by_name = api.get("/data/processed_users", params={"run_id": run_id, "department": "engineering"}).json()
        assert by_code["total"] == by_name["total"] == expected > 0
        assert {i["department"] for i in by_code["items"]} == {"Engineering"}

    def test_invalid_records_carry_their_reason(self, api, runs):
        items = api.get("/data/invalid_users", params={"run_id": runs[1]["run_id"]}).json()["items"]
        assert len(items) == 15 and all(i["error_reason"] for i in items)
        assert "age: 17 is below 18" in {i["error_reason"] for i in items}

    def test_no_password_and_secrets_stay_masked(self, api, runs):
        for table in TABLES:
            for run in runs:
                r = api.get(f"/data/{table}", params={"run_id": run["run_id"], "limit": 500})
                assert b"password" not in r.content
                for item in r.json()["items"]:
                    record = item["record"]
                    if isinstance(record, dict) and "ssn" in record:
                        assert record["ssn"].startswith("*") and record["bank"]["cardNumber"][0] == "*"
                    assert "raw_line" not in item

    @pytest.mark.parametrize("query", ["limit=0", "limit=501", "offset=-3", "order=up"])
    def test_bad_parameters_are_422(self, api, query):
        assert api.get(f"/data/raw_users?{query}").status_code == 422

    def test_unknown_table_is_404(self, api):
        r = api.get("/data/schema_migrations")
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


class TestSummary:
    """GET /summary."""

    def test_counts_agree_with_the_database(self, api, pipeline, runs):
        run_id = runs[0]["run_id"]
        s = api.get("/summary", params={"run_id": run_id}).json()
        with pipeline.db() as db:
            depts = dict(
                db.execute(
                    "SELECT department_code, count(*) FROM processed_users WHERE run_id=? GROUP BY 1", (run_id,)
                ).fetchall()
            )
            genders = dict(
                db.execute(
                    "SELECT gender, count(*) FROM processed_users WHERE run_id=? GROUP BY 1", (run_id,)
                ).fetchall()
            )
            young = db.execute(
                "SELECT count(*) FROM processed_users WHERE run_id=? AND age < 25", (run_id,)
            ).fetchone()[0]
        assert s["total"] == 208
        assert {d["department_code"]: d["count"] for d in s["by_department"]} == depts
        assert {g["gender"]: g["count"] for g in s["by_gender"]} == genders
        bands = {b["band"]: b["count"] for b in s["by_age_band"]}
        assert sum(bands.values()) == 208 and bands.get("18-24", 0) == young
        # DummyJSON's user agents are all desktop browsers.
        assert sum(d["count"] for d in s["by_device"]) == 208
        assert [r["run_id"] for r in s["runs"]] == [runs[1]["run_id"], runs[0]["run_id"]]
        assert (s["runs"][0]["valid_count"], s["runs"][0]["invalid_count"]) == (135, 15)

    def test_defaults_to_the_latest_run_with_data(self, api, runs):
        s = api.get("/summary").json()
        assert s["run_id"] == runs[1]["run_id"] and s["total"] == 135

    def test_unknown_run_is_404(self, api):
        assert api.get("/summary", params={"run_id": "nope"}).status_code == 404


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console_api(request, stack):
    """The console's API (500 ms, 100 rows) on each engine: the SQLite file, or a PostgreSQL copy of its rows read
    through the reader's role with the console's own role."""
    if request.param == "sqlite":
        yield stack.api
        return
    with api_on_postgresql(stack.api, request, ETL_API_SQL_TIMEOUT_MS="500", ETL_API_SQL_MAX_ROWS="100") as api:
        yield api


# (query, what the refusal names on SQLite, on PostgreSQL). Each engine refuses in its own words: SQLite's
# authorizer names the action or column, PostgreSQL names the statement it will not parse as a subquery or the
# table its role may not read; PostgreSQL's own dangerous functions are refused on both.
REFUSED = [
    ("DELETE FROM etl_runs", "delete", "delete"),
    ("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('x', 'y')", "insert", "insert"),
    ("UPDATE processed_users SET email = 'x'", "update", "update"),
    ("DROP TABLE raw_users", "drop", "drop"),
    ("ATTACH DATABASE '/tmp/x.db' AS x", "attach", "attach"),
    ("VACUUM INTO '/tmp/copy.db'", "refused", "vacuum"),
    ("PRAGMA journal_mode = DELETE", "pragma", "pragma"),
    ("PRAGMA query_only = 0", "pragma", "pragma"),
    ("SELECT 1; SELECT 2", "one statement", "one statement"),
    ("SELECT 1; DELETE FROM etl_runs", "one statement", "one statement"),
    ("SELECT 1) AS a; DELETE FROM etl_runs; SELECT (1", "syntax error", "one statement"),
    ("SELECT name, sql FROM sqlite_master", "sqlite_master", "sqlite_master"),
    ("SELECT count(*) FROM sqlite_schema", "sqlite_schema", "sqlite_schema"),
    ("SELECT * FROM schema_migrations", "schema_migrations", "schema_migrations"),
    ("SELECT * FROM loaded_pages", "loaded_pages", "loaded_pages"),
    ("SELECT * FROM pragma_table_info('raw_users')", "refused", "pragma_table_info"),
    ("SELECT * FROM processed_users", "processed_users.record", "processed_users"),
    ("SELECT password FROM raw_users", "password", "password"),
    ("SELECT record FROM raw_users", "raw_users.record", "raw_users"),
    ("SELECT r.record AS harmless FROM processed_users AS r", "record", "processed_users"),
    ("SELECT x FROM (SELECT record AS x FROM invalid_users) AS s", "invalid_users.record", "invalid_users"),
    ("SELECT raw_line FROM invalid_users", "raw_line", "invalid_users"),
    ("WITH c AS (SELECT * FROM raw_users) SELECT id FROM c", "raw_users.record", "raw_users"),
    ("SELECT json_extract(record, '$.ssn') FROM processed_users", "record", "json_extract"),
    ("SELECT id FROM processed_users WHERE record LIKE '%123%'", "record", "processed_users"),
    ("CREATE TEMP VIEW v AS SELECT record FROM raw_users", "refused", "create"),
    ("SELECT load_extension('x')", "load_extension", "load_extension"),
    ("SELECT nonsense FROM", "SQL error", "syntax error"),
    ("SELECT coalesce(printf('%.*c',900000000,'x'), printf('%.*c',900000000,'x'))", "printf", "printf"),
    ("SELECT length(zeroblob(900000000))", "size limit", "zeroblob"),
    ("SELECT repeat('x', 2000000)", "repeat", "size limit"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file", "pg_read_file"),
    ("SELECT pg_ls_dir('.')", "pg_ls_dir", "pg_ls_dir"),
    ("SELECT lo_import('/etc/passwd')", "lo_import", "lo_import"),
    ("SELECT set_config('statement_timeout', '0', false)", "set_config", "set_config"),
    ("SELECT query_to_xml('SELECT record FROM raw_users', true, false, '')", "query_to_xml", "raw_users"),
    ("COPY raw_users TO STDOUT", "copy", "copy"),
    ("SET ROLE postgres", "set", "set"),
    ("SELECT id FROM raw_users FOR UPDATE", "SQL error", "read-only"),
]


class TestSqlConsole:
    """POST /query_sql on both engines: one read-only statement over typed columns, limited in rows and time."""

    def test_select_returns_columns_and_rows(self, console_api, runs):
        r = console_api.sql(
            "SELECT department_code AS code, count(*) AS n FROM processed_users WHERE run_id = "
            f"'{runs[0]['run_id']}' GROUP BY 1 ORDER BY 2 DESC, 1"
        )
        body = r.json()
        assert r.status_code == 200 and body["columns"] == ["code", "n"]
        assert sum(n for _, n in body["rows"]) == 208 and body["truncated"] is False

    def test_rows_are_capped(self, console_api):
        body = console_api.sql("SELECT id, email FROM raw_users").json()
        assert len(body["rows"]) == 100 and body["truncated"] is True

    @pytest.mark.parametrize(("query", "sqlite_reason", "postgresql_reason"), REFUSED)
    def test_refused_with_a_clear_400(self, console_api, query, sqlite_reason, postgresql_reason):
        r = console_api.sql(query)
        assert r.status_code == 400, r.text
        reason = postgresql_reason if console_api.engine == "postgresql" else sqlite_reason
        assert reason.lower() in r.json()["detail"].lower()

    def test_select_star_works_on_the_runs_table(self, console_api):
        body = console_api.sql("SELECT * FROM etl_runs").json()
        assert "warnings" in body["columns"] and len(body["rows"]) == 2

    def test_database_is_unchanged_by_refused_writes(self, console_api):
        for query in ("DELETE FROM etl_runs", "SELECT 1) AS a; DELETE FROM etl_runs; SELECT (1"):
            assert console_api.sql(query).status_code == 400
        assert console_api.get("/etl_runs").headers["X-Total-Count"] == "2"
        assert console_api.sql("SELECT count(*) FROM etl_runs").json()["rows"] == [[2]]

    def test_runaway_recursive_query_is_stopped_within_the_limit(self, console_api):
        started = time.monotonic()
        r = console_api.sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n")
        elapsed = time.monotonic() - started
        assert r.status_code == 400 and "time limit" in r.json()["detail"]
        assert elapsed < 5  # the limit here is 0.5 s; generous for a loaded machine
        assert console_api.get("/healthz").status_code == 200

    def test_empty_or_missing_query_is_422(self, console_api):
        assert console_api.client.post("/query_sql", json={"query": ""}, headers=AUTH).status_code == 422
        assert console_api.client.post("/query_sql", json={}, headers=AUTH).status_code == 422

    @pytest.mark.parametrize("extra", [{"limt": 5}, {"limit": 5}, {"params": ["x"]}])
    def test_a_body_field_the_console_does_not_take_is_422_naming_it(self, console_api, extra):
        """A misspelt or unsupported field (a row limit, bound parameters) is refused, never silently ignored."""
        r = console_api.client.post("/query_sql", json={"query": "SELECT 1", **extra}, headers=AUTH)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [["body", name] for name in extra]


@pytest.fixture(scope="module")
def postgresql_api(request, stack):
    """The API over a PostgreSQL copy of the stack's database (the reader's role)."""
    with api_on_postgresql(stack.api, request, ETL_API_SQL_TIMEOUT_MS="500", ETL_API_SQL_MAX_ROWS="100") as api:
        yield api


class TestBothEngines:
    """The same rows on SQLite and on PostgreSQL: every read route answers the same bytes."""

    def test_read_routes_answer_the_same_bytes(self, api, postgresql_api, runs):
        first, second = runs[0]["run_id"], runs[1]["run_id"]
        urls = [
            "/etl_runs",
            "/etl_runs?status=succeeded&limit=1&offset=1",
            "/etl_runs/1",
            f"/etl_runs/{second}",
            "/etl_runs/1/quality",
            f"/etl_runs/{second}/quality",
            "/etl_runs/1/schema",
            "/summary",
            f"/summary?run_id={first}",
        ]
        for table in TABLES:
            urls += [
                f"/data/{table}",
                f"/data/{table}?run_id={second}&limit=7&offset=33",
                f"/data/{table}?q=an&sort=last_name&order=desc",
                f"/data/{table}?q=A_%25&limit=5",
                f"/data/{table}?sort=age&limit=100",  # NULL ages (invalid rows) sort first ascending on both
                f"/data/{table}?sort=age&order=desc&limit=100",
                f"/data/{table}?sort=email&offset=100",
                f"/data/{table}?department=engineering",
                f"/data/{table}.csv?run_id={second}&sort=first_name",
                f"/data/{table}.csv?raw=true&limit=50&offset=20",
                f"/data/{table}.parquet?run_id={first}",
            ]
        urls += ["/data/processed_users?department_code=eng&sort=city", "/data/processed_users?department=ENGINEERING"]
        for url in urls:
            on_sqlite, on_postgresql = api.get(url), postgresql_api.get(url)
            assert on_sqlite.status_code == 200, (url, on_sqlite.text[:300])
            assert on_postgresql.content == on_sqlite.content, url
            assert on_postgresql.headers.get("X-Total-Count") == on_sqlite.headers.get("X-Total-Count"), url

    def test_readiness_and_the_console_see_the_same_runs(self, api, postgresql_api):
        assert postgresql_api.get("/readyz").json() == {"status": "ready"}
        query = "SELECT run_id, status, valid_count, invalid_count FROM etl_runs ORDER BY id"
        assert postgresql_api.sql(query).json()["rows"] == api.sql(query).json()["rows"]

    def test_the_cache_sees_a_new_commit(self, api, postgresql_api, postgres_server):
        """A change committed by another connection (the saver's, here the owner's) shows at the next request."""
        before = postgresql_api.get("/etl_runs").content
        assert postgresql_api.get("/etl_runs").content == before  # from the cache
        owner = postgresql_api.database_url
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("UPDATE etl_runs SET error = 'changed' WHERE id = 1")
        try:
            assert b"changed" in postgresql_api.get("/etl_runs").content
        finally:
            with psycopg.connect(owner, autocommit=True) as conn:
                conn.execute("UPDATE etl_runs SET error = NULL WHERE id = 1")


class TestAuthAndCors:
    ROUTES = ("/etl_runs", "/etl_runs/1", "/data/raw_users", "/data/processed_users", "/data/invalid_users", "/summary")

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    )
    def test_data_and_command_routes_need_the_token(self, api, headers):
        for route in self.ROUTES:
            r = api.client.get(route, headers=headers)
            assert r.status_code == 401 and r.json() == {"detail": "missing or invalid bearer token"}
        assert api.client.post("/query_sql", json={"query": "SELECT 1"}, headers=headers).status_code == 401
        assert api.client.post("/etl_runs", headers=headers).status_code == 401

    def test_health_metrics_and_docs_stay_open(self, api):
        for route in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
            assert api.client.get(route).status_code == 200, route

    def test_auth_none_turns_it_off(self, stack):
        open_api = stack.apis["open"]
        for route in self.ROUTES:
            assert open_api.get(route, auth=False).status_code == 200, route
        assert open_api.sql("SELECT 1", auth=False).json()["rows"] == [[1]]

    def test_cors_preflight_for_the_configured_origin_only(self, api):
        pre = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        ok = api.client.options("/etl_runs", headers={"Origin": "http://front.example", **pre})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://front.example"
        assert ok.headers["access-control-allow-credentials"] == "true"
        bad = api.client.options("/etl_runs", headers={"Origin": "http://evil.example", **pre})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        simple = api.get("/etl_runs", headers={"Origin": "http://front.example"})
        assert "X-Total-Count" in simple.headers["access-control-expose-headers"]
        export = api.get("/data/raw_users.csv", headers={"Origin": "http://front.example"})
        assert "Content-Disposition" in export.headers["access-control-expose-headers"]


class TestDatabaseMissing:
    def test_data_routes_answer_503_until_the_database_exists(self, stack):
        nodb = stack.apis["nodb"]
        for route in ("/etl_runs", "/data/raw_users", "/summary", "/readyz"):
            r = nodb.get(route)
            assert r.status_code == 503 and "detail" in r.json(), route
        assert nodb.sql("SELECT 1").status_code == 503
        assert nodb.get("/healthz").status_code == 200

    def test_errors_leak_no_internals(self, api, pipeline, tmp_path):
        """Bad JSON is a 422; a SQLite error reaches the project's 503 handler and a bug its 500 handler: both
        answer a fixed JSON detail, and only the log names the cause."""
        r = api.client.post("/query_sql", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 422 and "Traceback" not in r.text
        # A copy of the real database, broken in two ways the API cannot expect: a table gone (sqlite3.Error
        # on /data/invalid_users) and a BLOB in a run's text column, which JSON cannot carry (TypeError on /etl_runs).
        broken = tmp_path / "broken.db"
        with closing(connect_reader(pipeline.db_path)) as src, closing(sqlite3.connect(broken)) as dst:
            src.backup(dst)
            dst.execute("DROP TABLE invalid_users")
            dst.execute("UPDATE etl_runs SET error = x'00ff' WHERE id = (SELECT max(id) FROM etl_runs)")
            dst.commit()
        bad = Api(pipeline, "api-broken", ETL_DB_PATH=str(broken))
        try:
            r = bad.get("/data/invalid_users")
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert r.json() == {"detail": "the database could not be read; try again"}
            r = bad.get("/etl_runs")
            assert r.status_code == 500 and r.json() == {"detail": "internal error"}
            # The process carries on (on a new connection: uvicorn closes the one a 500 was sent on).
            after = httpx.get(f"http://127.0.0.1:{bad.port}/data/raw_users", headers=AUTH, timeout=30)
            assert after.status_code == 200
        finally:
            bad.client.close()
            bad.proc.stop()
        log = bad.proc.output()
        assert "database error" in log and "no such table: invalid_users" in log
        assert "unexpected error" in log and "TypeError" in log


def test_post_etl_runs_starts_a_run_through_the_extractor(make_source, make_pipeline):
    """202 with a request id; the extractor service picks the command up and the run succeeds; 409 while running."""
    source = make_source(count=120)
    p = make_pipeline(source)
    p.start_workers()
    api = Api(p, "api")
    try:
        assert api.get("/etl_runs").json() == []  # the saver has made the database; no run yet
        queued = api.client.post("/etl_runs", headers=AUTH)
        assert queued.status_code == 202, queued.text
        request_id = queued.json()["request_id"]
        entries = p.redis.xrange(p.keys.commands_stream)
        command = orjson.loads(entries[-1][1][b"data"])
        assert command["type"] == "run_now" and command["request_id"] == request_id and command["trigger"] == "api"
        p.start("extractor")
        run = p.wait_run(("succeeded",), timeout_s=60)
        assert run["trigger"] == "api" and run["valid_count"] == 120
        # Answers cached while the database was unchanged follow the saver's commits.
        listed = api.get("/etl_runs").json()
        assert [(r["run_id"], r["status"]) for r in listed] == [(run["run_id"], "succeeded")]
        assert api.get("/summary").json()["total"] == 120
        # A run in progress (the extractor's lock) makes the next request a 409.
        p.redis.set(p.keys.extract_lock, "someone", px=5000)
        busy = api.client.post("/etl_runs", headers=AUTH)
        assert busy.status_code == 409 and "already" in busy.json()["detail"]
    finally:
        api.client.close()


def _run_now_burst(api: Api, n: int = 8) -> list[httpx.Response]:
    """``n`` POST /etl_runs at once (released together by a barrier), each on its own connection."""
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=api.client.base_url, headers=AUTH, timeout=30) as client:
            barrier.wait()
            answers.append(client.post("/etl_runs"))

    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def _one_accepted(answers: list[httpx.Response]) -> tuple[str, list[str]]:
    """The one 202's request id and the 409s' details; fails unless exactly one request of the burst was accepted."""
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] + [409] * (len(answers) - 1), [(a.status_code, a.text) for a in answers]
    accepted = next(a for a in answers if a.status_code == 202).json()["request_id"]
    return accepted, [a.json()["detail"] for a in answers if a.status_code == 409]


def test_concurrent_run_now_requests_queue_exactly_one_run(make_source, make_pipeline):
    """N requests at once on two API workers: one 202, N-1 409 naming the queued request; one run; again after it."""
    source = make_source(count=120)
    p = make_pipeline(source)
    p.start_workers()
    api = Api(p, "api", ETL_API_WORKERS="2")
    try:
        assert api.get("/etl_runs").json() == []
        # Queued: nothing but the claim says so until the extractor takes the command.
        accepted, refusals = _one_accepted(_run_now_burst(api))
        assert all(d.startswith("a run is already queued: request " + accepted) for d in refusals), refusals
        assert all(d.endswith("try again when it has finished") for d in refusals), refusals
        assert p.redis.xlen(p.keys.commands_stream) == 1
        assert 0 < p.redis.pttl(p.keys.run_claim) <= 3_600_000  # a crashed extractor cannot keep it forever
        p.start("extractor")
        first = p.wait_run(("succeeded",), timeout_s=60)
        # The run is at rest: the next burst queues exactly one run again.
        _one_accepted(_run_now_burst(api))
        deadline = time.monotonic() + 60
        while len(runs := api.get("/etl_runs?status=succeeded").json()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [r["run_id"] for r in runs][1:] == [first["run_id"]], p.logs()
        second = runs[0]
        assert second["trigger"] == "api" and len(api.get("/etl_runs").json()) == 2
        # Extracted but not loaded yet (as when a short extraction ends in a moment): still going, 409 naming it.
        with closing(sqlite3.connect(p.db_path)) as db, db:
            db.execute("UPDATE etl_runs SET status = 'transformed' WHERE run_id = ?", [second["run_id"]])
        going = api.client.post("/etl_runs", headers=AUTH)
        assert going.status_code == 409, going.text
        assert going.json()["detail"].startswith(f"a run is already going: run {second['run_id']} (status transformed")
        with closing(sqlite3.connect(p.db_path)) as db, db:
            db.execute("UPDATE etl_runs SET status = 'succeeded' WHERE run_id = ?", [second["run_id"]])
        assert api.client.post("/etl_runs", headers=AUTH).status_code == 202
    finally:
        api.client.close()


def test_a_run_now_request_the_extractor_defers_does_not_keep_the_claim(make_source, make_pipeline):
    """Another extractor holds the run lock when the service reads the request: it defers it and frees the claim."""
    p = make_pipeline(make_source(count=20))
    p.start_workers()
    api = Api(p, "api")
    try:
        assert api.client.post("/etl_runs", headers=AUTH).status_code == 202
        p.redis.set(p.keys.extract_lock, "another extractor", px=60_000)  # as `extractor once` taking it first
        extractor = p.start("extractor")
        deadline = time.monotonic() + 30
        while p.redis.exists(p.keys.run_claim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "request ignored" in extractor.output() and not p.redis.exists(p.keys.run_claim), extractor.output()
        busy = api.client.post("/etl_runs", headers=AUTH)
        assert busy.status_code == 409 and "is being extracted" in busy.json()["detail"], busy.text
        p.redis.delete(p.keys.extract_lock)  # that run ended: the next request is accepted, not held for the TTL
        assert api.client.post("/etl_runs", headers=AUTH).status_code == 202
    finally:
        api.client.close()


def test_reading_during_a_load_neither_blocks_the_saver_nor_fails(make_source, make_pipeline):
    """WAL: readers hammer every read route while the saver loads a run; the run completes, no read fails."""
    source = make_source(count=3000)
    p = make_pipeline(source)
    p.start_workers()
    api = Api(p, "api")
    # Before the saver has made the database the API rightly answers 503 ("no run loaded yet"): not this test's case.
    deadline = time.monotonic() + 30
    while api.get("/etl_runs").status_code != 200:
        assert time.monotonic() < deadline, "the saver never made the database"
        time.sleep(0.05)
    statuses: list[int] = []
    stop = threading.Event()

    def read() -> None:
        with httpx.Client(base_url=api.client.base_url, headers=AUTH, timeout=30) as client:
            while not stop.is_set():
                for route in ("/etl_runs", "/summary", "/data/processed_users?limit=50&offset=1000"):
                    statuses.append(client.get(route).status_code)
                statuses.append(client.post("/query_sql", json={"query": "SELECT count(*) FROM raw_users"}).status_code)

    readers = [threading.Thread(target=read) for _ in range(2)]
    try:
        for t in readers:
            t.start()
        done = p.extract()
        assert done.returncode == 0, done.stdout + done.stderr
        run = p.wait_run(("succeeded",), timeout_s=90)
    finally:
        stop.set()
        for t in readers:
            t.join()
        api.client.close()
    assert run["valid_count"] == 3000 and p.count("processed_users", run["run_id"]) == 3000
    assert len(statuses) > 20 and set(statuses) <= {200}, sorted(set(statuses))
