"""etl_common.metrics: every family has owners, nothing is exported before a service registers its own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from etl_common import metrics

SERVICES = Path(__file__).resolve().parents[3] / "services"
# Shared modules and the services that run them.
SHARED = {"etl_common/streams.py": metrics.WORKERS}


def test_every_family_of_the_module_has_owners():
    families = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert families and all(f in metrics.OWNERS for f in families)


def test_importing_the_module_exports_nothing():
    """A family made with Counter(...) directly would be in the default registry of every process."""
    code = (
        "from prometheus_client import REGISTRY; import etl_common.metrics; "
        "print(sorted(REGISTRY._names_to_collectors))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "etl_" not in out


@pytest.mark.parametrize("service", metrics.SERVICES)
def test_a_registry_shows_its_service_families_only(service):
    registry = CollectorRegistry()
    metrics.register(service, registry)
    metrics.register(service, registry)  # a second call (a second app in one process) changes nothing
    text = generate_latest(registry).decode()
    for family, owners in metrics.OWNERS.items():
        assert (f"# HELP {family._name}" in text) == (service in owners), family._name


def _uses(path: Path) -> set[str]:
    """Names used as ``metrics.NAME`` in a module."""
    tree = ast.parse(path.read_text())
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "metrics"
    }


def test_each_service_updates_only_families_it_exports():
    """A family updated by a service that does not own it would be counted and never shown."""
    wrong = []
    for service in metrics.SERVICES:
        for path in (SERVICES / service).rglob("*.py"):
            for name in _uses(path):
                family = getattr(metrics, name)
                if isinstance(family, MetricWrapperBase) and service not in metrics.OWNERS[family]:
                    wrong.append(f"{path.relative_to(SERVICES)}: {name}")
    for rel, services in SHARED.items():
        for name in _uses(SERVICES / rel):
            if not set(services) <= set(metrics.OWNERS[getattr(metrics, name)]):
                wrong.append(f"{rel}: {name}")
    assert not wrong
