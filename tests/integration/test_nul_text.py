"""Text PostgreSQL refuses (U+0000; a lone surrogate) in any field of a record: the same outcome on both engines."""

import copy
from contextlib import closing

import orjson
import pytest

import testbed.postgres as tbpg
from dummyjson.server import Source
from dummyjson.users import make_user
from etl_common.db import parse_url
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


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(str(tmp_path / "data.db"))
    else:
        s = Store(parse_url(request.getfixturevalue("postgres_server").create_database()))
    yield s
    s.close()


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
