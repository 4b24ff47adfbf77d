"""Text PostgreSQL refuses (U+0000; a lone surrogate) in any field of a record: the same outcome on both engines."""

import base64
import copy
import json
from contextlib import closing

import orjson
import pytest

import testbed.postgres as tbpg
from dummyjson.server import Source
from dummyjson.users import make_user
from saver.schema import save_pages
from saver.store import Store
from tests.integration.test_api import Api
from tests.support import Pipeline, SourceServer
from transformer.transform import transform_page

DEPARTMENTS = {"engineering": "ENG"}
NUL = "\x00"
TYPED = ("user_id", "first_name", "last_name", "email", "username", "age", "gender", "department")


def _users() -> list[dict]:
    """Users carrying U+0000 in a typed column, a nested value, a secret, a field name, an array; and a clean one."""
    changes = [
        {"firstName": "Ann" + NUL},
        {"lastName": NUL, "email": "a" + NUL + "b@example.com"},
        {"company": {"department": "Engineering" + NUL, "title": "x"}},
        {"address": {"city": NUL + "Paris"}, "ssn": "123-45-" + NUL + "789"},
        {"hair": {"co" + NUL + "lor": "red"}},
        {"tags": ["a", "b" + NUL]},
        {"username": "plain"},  # valid
    ]
    users = []
    for i, change in enumerate(changes):
        user = copy.deepcopy(make_user(i + 1))
        user["company"] = {**user["company"], "department": "Engineering"}
        user.update(change)
        users.append(user)
    return users


REASONS = [
    "firstName: holds the NUL character U+0000",
    "email: 'a\\x00b@example.com' is not a valid address (The email address contains invalid characters before "
    "the @-sign: U+0000.); lastName: holds the NUL character U+0000; email: holds the NUL character U+0000",
    "company.department: holds the NUL character U+0000",
    "address.city: holds the NUL character U+0000; ssn: holds the NUL character U+0000",
    "hair.co\\u0000lor: the field name holds the NUL character U+0000",
    "tags[]: holds the NUL character U+0000",
]


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def test_a_page_with_nul_characters_loads_on_both_engines_with_its_records_invalid(store):
    users = orjson.loads(orjson.dumps(_users()))  # as they cross Redis
    out = transform_page(users, DEPARTMENTS)
    page = {"run_id": "20261204_010203_abcdef", "run_ts": "20261204_010203", "page": 0, "skip": 0, **out}
    assert store.load_pages([page]) == [(page["run_id"], 0)]
    save_pages(store.conn, [page])
    invalid = store.conn.execute("SELECT * FROM invalid_users ORDER BY position").fetchall()
    assert [r["error_reason"] for r in invalid] == REASONS
    assert [r["failed_rules"] for r in invalid] == ["nul", "email,nul", "nul", "nul", "nul", "nul"]
    # Nothing lost: each record's JSON keeps its value (escaped); typed columns hold only text both engines can.
    raw = store.conn.execute("SELECT * FROM raw_users ORDER BY position").fetchall()
    assert [orjson.loads(r["record"])["id"] for r in raw] == list(range(1, 8))
    assert orjson.loads(raw[0]["record"])["firstName"] == "Ann" + NUL
    assert (raw[0]["first_name"], raw[1]["last_name"], raw[1]["email"], raw[2]["department"]) == (None,) * 4
    assert raw[0]["last_name"] == users[0]["lastName"] and raw[6]["username"] == "plain"
    schema = store.conn.execute("SELECT summary FROM page_schemas").fetchone()[0]
    assert "hair.co\\u0000lor" in orjson.loads(schema)["fields"]


def _page_body(users: list[dict]) -> bytes:
    """The source's page as json.dumps writes it: U+0000 as ``\\u0000``, a lone surrogate as ``\\ud800``."""
    return json.dumps({"users": users, "total": len(users), "skip": 0, "limit": len(users)}).encode()


def _same_everywhere(value, run: dict, folder: str):
    """``value`` with what differs between two runs of the same users taken out: the run's id, times and folder."""
    if isinstance(value, dict):
        return {k: _same_everywhere(v, run, folder) for k, v in value.items() if k not in _TIMES and k[-3:] != "_at"}
    if isinstance(value, list):
        return [_same_everywhere(v, run, folder) for v in value]
    if isinstance(value, str):
        ts = run["run_id"].rsplit("_", 1)[0]
        return value.replace(run["run_id"], "RUN").replace(ts, "TS").replace(folder, "DIR")
    return value


_TIMES = ("run_timestamp", "duration_s")
URLS = (
    "/etl_runs/{run_id}",
    "/data/invalid_users?run_id={run_id}&limit=100",
    "/data/raw_users?run_id={run_id}&limit=100",
    "/data/processed_users?run_id={run_id}&limit=100",
    "/etl_runs/{run_id}/quality",
    "/etl_runs/{run_id}/schema",
    "/summary?run_id={run_id}",
)


def test_records_holding_nul_or_a_lone_surrogate_end_alike_on_both_engines(
    tmp_path, redis_server, sftp_server, postgres_server
):
    """A run of such records succeeds on both engines with them invalid and their reasons; the API answers alike."""
    users = [*_users(), {**make_user(8), "firstName": "\ud800"}]  # a lone surrogate: quarantined by the extractor
    body = _page_body(users)
    url = postgres_server.create_database()
    answers = {}
    for engine, env in (("sqlite", {}), ("postgresql", {"ETL_DATABASE_URL": url})):
        server = SourceServer(Source(len(users))).start()
        server.faults([{"skip": 0, "status": 200, "times": -1, "body_b64": base64.b64encode(body).decode()}])
        (tmp_path / engine / "upload").mkdir(parents=True)
        sftp = {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(tmp_path / engine / "upload")}
        p = Pipeline(tmp_path / engine / "p", redis_server.url, sftp, server.url, extra=env)
        api = None
        try:
            p.start_workers()
            done = p.extract()
            assert done.returncode == 0, done.stdout + done.stderr
            run = p.wait_run(("succeeded",))
            assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (8, 1, 7), p.logs()
            with closing(p.db()) as db:
                reasons = [
                    r[0]
                    for r in db.execute(
                        "SELECT error_reason FROM invalid_users WHERE run_id=? ORDER BY position", (run["run_id"],)
                    )
                ]
            assert reasons[:6] == REASONS
            assert reasons[6].startswith("firstName: not valid Unicode (lone surrogate U+D800")
            dlq = (p.data_dir / run["dlq_file"]).read_bytes().splitlines()
            assert [orjson.loads(line)["error_reason"] for line in dlq] == reasons
            assert orjson.loads(dlq[0])["firstName"] == "Ann" + NUL  # nothing lost: the file keeps the value
            if engine == "sqlite":
                api = Api(p, "api-sqlite")
            else:
                reader, console = tbpg.make_roles(postgres_server, url)
                api = Api(p, "api-pg", ETL_API_DATABASE_URL=reader, ETL_API_SQL_DATABASE_URL=console)
            answers[engine] = {}
            for u in URLS:
                got = api.get(u.format(run_id=run["run_id"]))
                assert got.status_code == 200, (u, got.text)
                answers[engine][u] = _same_everywhere(got.json(), run, str(tmp_path / engine))
        finally:
            if api:
                api.client.close()
            p.stop_all()
            server.stop()
    for u in URLS:
        assert answers["sqlite"][u] == answers["postgresql"][u], u
    invalid = answers["sqlite"][URLS[1]]["items"]
    assert [i["first_name"] for i in invalid][:2] == [None, users[1]["firstName"]]
