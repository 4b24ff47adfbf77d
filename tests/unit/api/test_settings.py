"""The API's settings: CORS origins each as a browser sends it, or `*` alone; an operator token of its own."""

import pytest
from pydantic import ValidationError

from api.settings import ApiSettings


def origins(value: str) -> str:
    return ApiSettings(_env_file=None, api_cors_origins=value).api_cors_origins


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("", ""),
        ("  ", ""),
        ("*", "*"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("http://a.com, https://b.com:8443", "http://a.com,https://b.com:8443"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_kept(given, kept):
    assert origins(given) == kept


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("localhost:5000", "is not an origin"),
        ("http://localhost:5000/", "no path or trailing slash"),
        ("http://localhost:5000/app", "no path or trailing slash"),
        ("http://a.com,,http://b.com", "an empty origin"),
        ("http://a.com,", "an empty origin"),
        ("*,http://a.com", "must stand alone"),
        ("ftp://a.com", "is not an origin"),
        ("http://a.com:99999", "is not an origin"),
        ("http://user@a.com", "is not an origin"),
        ("http://a.com?x=1", "is not an origin"),
        ("http://A.com", "lower-case"),
        ("http://a .com", "is not an origin"),
    ],
)
def test_a_bad_origin_is_refused_naming_it(given, reason):
    with pytest.raises(ValidationError, match=reason):
        origins(given)


def test_the_operator_token_must_differ_from_the_read_token():
    with pytest.raises(ValidationError, match="must differ from ETL_API_TOKEN"):
        ApiSettings(_env_file=None, api_token="same", api_operator_token="same")
    both = ApiSettings(_env_file=None, api_token="read", api_operator_token="operate")
    assert both.api_operator_token is not None and both.api_operator_token.get_secret_value() == "operate"
    assert ApiSettings(_env_file=None, api_token="read", api_operator_token="").api_operator_token is not None
