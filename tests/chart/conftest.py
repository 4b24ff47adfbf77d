"""Chart tests render charts/etl with Helm's own engine (testbed/chart.py); the renders are cached per value set."""

import functools

import pytest

from tests.chart import k8s


@functools.cache
def _rendered(name: str) -> tuple:
    return tuple(k8s.render_objects(k8s.VALUE_SETS[name]))


@pytest.fixture(params=sorted(k8s.VALUE_SETS))
def rendered(request) -> list[dict]:
    """The objects of one value set (the defaults, then each ci/*-values.yaml)."""
    return [dict(o) for o in _rendered(request.param)]
