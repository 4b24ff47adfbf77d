"""The bearer-token check of the data and command routes."""

import pytest
from pydantic import SecretStr

from api.deps import token_ok
from api.settings import ApiSettings


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer  s3cret", True),
        ("Bearer s3cret2", False),
        ("Bearer", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
    ],
)
def test_token_check(header, ok):
    settings = ApiSettings(api_token=SecretStr("s3cret"), api_auth="token")
    assert token_ok(settings, header) is ok


def test_no_token_configured_refuses_everything():
    assert not token_ok(ApiSettings(api_token=None, api_auth="token"), "Bearer ")


def test_auth_none_lets_everything_through():
    assert token_ok(ApiSettings(api_auth="none"), None)
