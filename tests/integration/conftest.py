"""Fixtures shared by the integration modules that read one module-scoped stack of loaded runs."""

from typing import Any

import pytest

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
