"""requirements.lock pins every package that pyproject.toml declares, within the declared bounds."""

import re

import pytest
from packaging.requirements import Requirement

from testbed import ROOT
from tests.support import project


def locked() -> dict[str, str]:
    """Package name (normalised) -> pinned version, from requirements.lock."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if m:
            pins[normalise(m.group(1))] = m.group(2)
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> list[Requirement]:
    """Runtime and dev requirements that apply to this Python (a marker may limit one to older Pythons)."""
    table = project()
    reqs = [Requirement(r) for r in [*table["dependencies"], *table["optional-dependencies"]["dev"]]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": "dev"})]


@pytest.mark.parametrize("req", declared(), ids=str)
def test_every_declared_dependency_is_pinned_within_its_bounds(req):
    pins = locked()
    name = normalise(req.name)
    assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in requirements.lock (make lock)"
    assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req.specifier}"


def test_runtime_dependencies_are_bounded_above_and_below():
    """Bounds, not pins, in pyproject.toml: a new major version is a decision, an old one a bug."""
    for text in project()["dependencies"]:
        ops = {spec.operator for spec in Requirement(text).specifier}
        assert ops == {">=", "<"}, text
