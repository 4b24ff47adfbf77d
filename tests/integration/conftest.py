"""Fixtures shared by the integration modules that read one module-scoped stack of loaded runs."""

from collections.abc import Iterator
from typing import Any

import pytest

from etl_common.db import parse_url
from saver.store import Store
from tests.support import Stack


@pytest.fixture(scope="module")
def api(stack: Stack) -> Any:
    return stack.api


@pytest.fixture(scope="module")
def runs(stack: Stack) -> list[Any]:
    return stack.runs


@pytest.fixture(scope="module")
def pipeline(stack: Stack) -> Any:
    return stack.pipeline


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_store(request: Any, tmp_path: Any) -> Iterator[Store]:
    """The saver's Store on each engine: a SQLite file, then a fresh database on the test's PostgreSQL server."""
    if request.param == "sqlite":
        s = Store(str(tmp_path / "data.db"))
    else:
        s = Store(parse_url(request.getfixturevalue("postgres_server").create_database()))
    yield s
    s.close()
