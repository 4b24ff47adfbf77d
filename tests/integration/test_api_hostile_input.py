"""Unicode edge cases and hostile JSON in every path, query string and body of the API (a real process): never a 5xx.

The routes come from the served OpenAPI document, so a route added later is covered too. Values are
sent as raw bytes: lone surrogates (as JSON escapes and as their UTF-8-like bytes), bytes that are
not UTF-8, NUL, bidi controls, NaN/Infinity, numbers past 64 bits, and nesting at several depths.
"""

from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dummyjson.server import Source
from tests.integration.test_api import AUTH, api_on_postgresql, api_over_one_run

EXAMPLES_PER_OPERATION = 60

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
EDGE_CHARS = st.sampled_from(["\x00", "\u202e", "\ufeff", "\uffff", "\U0001f600", "%", "'", '"', "\\", "é", "\n"])
HOSTILE_TEXT = st.lists(st.one_of(SURROGATES, EDGE_CHARS, st.characters()), min_size=1, max_size=12).map("".join)
# Raw JSON values no strict writer produces, and a few ordinary ones around them.
RAW_JSON_VALUES = st.one_of(
    st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e400",
            b"-1e400",
            b"18446744073709551616",
            b"-9223372036854775809",
            b"0.1000000000000000055511151231257827",
            b'"\xff\xfe"',
            b'"\xed\xa0\x80"',
            b"true",
            b"null",
            b"{}",
        ]
    ),
    st.sampled_from([10, 100, 255, 1000, 5000, 100_000]).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([10, 300, 5000]).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    HOSTILE_TEXT.map(lambda s: _json_string(s)),
)


def _json_string(text: str) -> bytes:
    """A JSON string literal of ``text``, lone surrogates written as ``\\uXXXX`` escapes."""
    return ('"' + "".join(_escape(c) for c in text) + '"').encode("utf-8", "surrogatepass")


def _escape(c: str) -> str:
    if 0xD800 <= ord(c) <= 0xDFFF or ord(c) < 0x20 or c in '"\\':
        return f"\\u{ord(c):04x}"
    return c


def _wire(text: str) -> str:
    """``text`` percent-encoded byte by byte, surrogates as the bytes CESU-8 would write (not UTF-8)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory, redis_server, sftp_server):
    """One loaded run and the API over it, on each engine (PostgreSQL: a copy of the run's rows); its OpenAPI
    operations."""
    tmp = tmp_path_factory.mktemp("api-hostile")
    with api_over_one_run(tmp, redis_server, sftp_server, Source(30, 3, 7), ETL_API_SQL_TIMEOUT_MS="300") as api:
        if request.param == "sqlite":
            yield api, api.get("/openapi.json").json()
            return
        with api_on_postgresql(api, request, ETL_API_SQL_TIMEOUT_MS="300") as on_postgresql:
            yield on_postgresql, on_postgresql.get("/openapi.json").json()


def _operations() -> list[tuple[str, str]]:
    # Known at collection time from the code; the test checks them against the served document.
    from api.main import create_app
    from api.settings import ApiSettings

    doc = create_app(ApiSettings()).openapi()
    return [(path, method) for path, ops in doc["paths"].items() for method in ops]


OPERATIONS = _operations()


def _check(answer: httpx.Response, what: str) -> None:
    assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    if answer.status_code >= 400 and answer.status_code != 405:
        assert "detail" in answer.json(), (what, answer.text[:300])


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_no_hostile_path_query_or_body_gets_a_server_error(served, path, method):
    api, doc = served
    operation = doc["paths"][path][method]
    params = operation.get("parameters", [])
    body_props = list(
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
        .get("properties", {"query": {}})
    )
    if "$ref" in str(operation.get("requestBody", {})):
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        body_props = list(doc["components"]["schemas"][ref].get("properties", {}))

    @given(text=HOSTILE_TEXT, raw=RAW_JSON_VALUES, which=st.integers(min_value=0, max_value=20))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    def check(text, raw, which):
        url = path
        query = []
        for i, param in enumerate(params):
            if param["in"] == "path":
                url = url.replace("{" + param["name"] + "}", _wire(text))
            elif param["in"] == "query" and (i == which % max(len(params), 1) or which > 15):
                query.append(f"{param['name']}={_wire(text)}")
        query.append(f"{_wire(text)}={_wire(text)}")  # a parameter nobody declared
        full = url + "?" + "&".join(query)
        if method == "get":
            _check(api.client.get(full, headers=AUTH), f"GET {full!r}")
            return
        field = body_props[which % len(body_props)] if body_props else "query"
        for body in (b'{"' + field.encode() + b'": ' + raw + b"}", raw, _json_string(text)):
            answer = api.client.request(
                method.upper(), full, content=body, headers={**AUTH, "Content-Type": "application/json"}
            )
            _check(answer, f"{method.upper()} {full!r} {body[:80]!r}")

    check()


def test_the_issue_example_is_a_422(served):
    """``POST /query_sql`` with a lone surrogate in the query (a 500 before)."""
    api, _ = served
    answer = api.client.post(
        "/query_sql",
        content=b'{"query": "SELECT \'\\ud800\' AS x"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "query"] and error["type"] == "string_unicode"
    assert error["input"] == "SELECT '\ufffd' AS x"


def _free_text(doc: dict) -> list[tuple[str, str, str]]:
    """(path, parameter, where) of every free-text string parameter (no enum) of every operation."""
    found = []
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                schemas = param["schema"].get("anyOf", [param["schema"]])
                if any(s.get("type") == "string" and "enum" not in s for s in schemas):
                    found.append((path, param["name"], param["in"]))
    return found


@pytest.mark.parametrize("control", ["\x00", "\x01", "\t", "\n", "\x1f", "\x7f"])
def test_control_characters_in_free_text_are_a_422_on_every_route(served, control):
    """``q=a%00zzzz`` searched like ``q=a`` (SQLite stops at the NUL): every free-text parameter refuses them."""
    api, doc = served
    free = _free_text(doc)
    assert {name for _, name, _ in free} >= {"q", "run_id", "department", "department_code", "run"}
    for path, name, where in free:
        value = _wire("a" + control + "zzzz")
        if where == "path":
            url = path.replace("{" + name + "}", value)
        else:
            url = path.replace("{run}", "1") + f"?{name}={value}"
        answer = api.client.get(url, headers=AUTH)
        assert answer.status_code == 422, (url, answer.status_code, answer.text[:300])
        (error,) = answer.json()["detail"]
        assert error["loc"] == [where, name], url
        assert error["msg"] == "control characters (U+0000 to U+001F, U+007F) are not allowed", url


def test_search_text_without_controls_is_still_searched(served):
    api, _ = served
    every = api.client.get("/data/raw_users", params={"q": "a"}, headers=AUTH)
    assert every.status_code == 200 and every.json()["items"]
    none = api.client.get("/data/raw_users", params={"q": "a zzzz é"}, headers=AUTH)
    assert none.status_code == 200 and none.json()["items"] == []
