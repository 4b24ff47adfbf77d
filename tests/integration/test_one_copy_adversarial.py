"""One copy of each user on unusual records: escapes, a record's own ``department_code`` key, codes JSON escapes,
unknown departments, long and nested values; the processed file, the view and the API on both engines agree."""

import copy
from contextlib import closing

import orjson
import pytest

from dummyjson.server import Source
from dummyjson.users import make_user
from tests.integration.test_api import Api, api_on_postgresql
from tests.support import Pipeline, SourceServer

DEPARTMENTS = (
    "department_name,department_code\n"
    "Engineering,ENG\n"
    'Quoted,"Q""T"\n'  # a code JSON escapes: the row keeps its whole record
    "Backslash,B\\S\n"
    "Unicode,ÜNÏ✓\n"
    "Emoji,😀X\n"
    "Apostrophe,O'K\n"
    "Line sep,L\u2028S\n"
)


def _users() -> list[dict]:
    base = make_user(1)
    users = []
    variants = [
        {"company": {**base["company"], "department": "Engineering"}},
        {"company": {**base["company"], "department": "Quoted"}},
        {"company": {**base["company"], "department": "Backslash"}},
        {"company": {**base["company"], "department": "Unicode"}},
        {"company": {**base["company"], "department": "Emoji"}},
        {"company": {**base["company"], "department": "Apostrophe"}},
        {"company": {**base["company"], "department": "Line sep"}},
        {"company": {**base["company"], "department": "  ENGINEERING  "}},
        {"company": {**base["company"], "department": 'Nowhere "at" all \\ \''}},  # UNKNOWN
        {"department_code": "SPOOF"},  # the record's own key of that name
        {"firstName": 'Zoë \u0001 \u2028 😀 "q" \\ </script>'},
        {"lastName": "x" * 200_000},
        {"nested": {"a": [{}, [], {"b": {"c": [1.0, -0.0, 1e5, 1.5e-300, 9007199254740993]}}]}},
        {"hair": {}},
        {"bank": None, "crypto": []},
        {"}": "{", '"department_code":': "}"},
    ]
    for i, change in enumerate(variants):
        user = copy.deepcopy(make_user(i + 1))
        user.update(change)
        users.append(user)
    return users


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, redis_server, sftp_server, request):
    tmp = tmp_path_factory.mktemp("one-copy-odd")
    (tmp / "upload").mkdir()
    csv = tmp / "departments.csv"
    csv.write_text(DEPARTMENTS, encoding="utf-8")
    server = SourceServer(Source(0, 0, 0, _users())).start()
    sftp = {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(tmp / "upload")}
    p = Pipeline(tmp / "p", redis_server.url, sftp, server.url, extra={"ETL_DEPARTMENTS_CSV": str(csv)})
    api = None
    try:
        p.start_workers()
        done = p.extract()
        assert done.returncode == 0, done.stdout + done.stderr
        run = p.wait_run(("succeeded",))
        api = Api(p, "api-odd")
        api.pipeline = p
        with api_on_postgresql(api, request) as pg:
            yield p, run, api, pg
    finally:
        if api:
            api.client.close()
        p.stop_all()
        server.stop()


def _with_code(raw: str, code: object) -> bytes:
    """The processed line as the saver appends it (saver.userrows._with_code)."""
    tail = b',"department_code":' + orjson.dumps(code) + b"}"
    return raw.encode()[:-1] + tail


def test_every_valid_user_is_processed(loaded):
    p, run, *_ = loaded
    assert run["valid_count"] == len(_users()), p.logs()


def test_the_file_equals_the_view(loaded):
    p, run, *_ = loaded
    with closing(p.db()) as db:
        rows = db.execute(
            "SELECT r.record, p.department_code, v.record FROM processed_users p JOIN raw_users r "
            "USING (run_id, page, position) JOIN processed_records v ON v.id = p.id WHERE p.run_id=? "
            "ORDER BY p.page, p.position",
            (run["run_id"],),
        ).fetchall()
    lines = (p.data_dir / run["processed_file"]).read_bytes().splitlines()
    assert [v.encode() for _, _, v in rows] == lines
    codes = [orjson.loads(line)["department_code"] for line in lines]
    assert 'Q"T' in codes and "UNKNOWN" in codes and "ÜNÏ✓" in codes


@pytest.mark.parametrize(
    "query",
    [
        "limit=100",
        "sort=department_code&limit=100",
        "q=Zo&limit=5",
        "department_code=q%22t",
        "sort=last_name",
        "q=ZO%C3%8B",  # ZOË: case folding past ASCII
        "q=zo%C3%AB",
        "q=%5C",  # a backslash, LIKE's escape character here
        "q=%25%5C_",
        "sort=first_name&order=desc",
        "department=nowhere%20%22AT%22%20all%20%5C%20%27",
        "department=%20%20engineering%20%20",
    ],
)
def test_the_api_answers_the_file_on_both_engines(loaded, query):
    p, run, api, pg = loaded
    url = f"/data/processed_users?run_id={run['run_id']}&{query}"
    got, on_pg = api.get(url), pg.get(url)
    assert got.status_code == 200 and got.content == on_pg.content
    lines = {orjson.loads(line)["id"]: line for line in (p.data_dir / run["processed_file"]).read_bytes().splitlines()}
    for item in orjson.loads(got.content)["items"]:
        assert orjson.dumps(item["record"]) == orjson.dumps(orjson.loads(lines[item["user_id"]]))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_exports_agree_on_both_engines(loaded, fmt):
    _, run, api, pg = loaded
    url = f"/data/processed_users.{fmt}?run_id={run['run_id']}"
    got, on_pg = api.get(url), pg.get(url)
    assert got.status_code == on_pg.status_code == 200 and got.content == on_pg.content
