"""Property-based run of the API's own OpenAPI schema (schemathesis) against the API as a real process.

Every operation gets a bounded number of generated requests; no answer may be a 5xx or break the
schema (status codes, content type, headers and bodies as documented).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.main import create_app
from api.settings import ApiSettings
from dummyjson.server import Source
from tests.integration.test_api import AUTH, api_over_one_run

EXAMPLES_PER_OPERATION = 40

# The operations, known at collection time from the code; the test itself uses the served schema.
OPERATIONS = [
    (r.ok().path, r.ok().method.upper())
    for r in schemathesis.openapi.from_dict(create_app(ApiSettings()).openapi()).get_all_operations()
]


@pytest.fixture(scope="module")
def api_url(tmp_path_factory, redis_server, sftp_server):
    """One real run with invalid records, loaded by the services, and the API over it."""
    tmp = tmp_path_factory.mktemp("api-schema")
    with api_over_one_run(tmp, redis_server, sftp_server, Source(60, 2, 7), ETL_API_SQL_TIMEOUT_MS="300") as api:
        yield f"http://127.0.0.1:{api.port}"


@pytest.fixture(scope="module")
def api_schema(api_url):
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_server_error_and_every_answer_matches_the_schema(api_schema, path, method):
    operation = api_schema[path][method]
    # Any text is a schema-valid query, yet most of it is not SQL: a 400 is the documented answer there.
    excluded = [positive_data_acceptance] if path == "/query_sql" else []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case):
        case.call_and_validate(headers=AUTH, excluded_checks=excluded)

    check()
