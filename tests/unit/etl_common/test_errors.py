"""The error trees drawn in etl_common/errors.py and docs/errors.md are the classes as they are."""

import importlib
import pkgutil
import re

import pytest

from etl_common import errors
from etl_common.errors import EtlError, NextStep
from testbed import ROOT

SERVICES = ("api", "dummyjson", "etl_common", "etlctl", "extractor", "saver", "transformer")
# A line of a drawn tree: the branch marks, a class name, then what it says of it.
LINE = re.compile(r"^(?P<marks>[ │├└─]*)(?P<name>[A-Z]\w*)(?P<says>.*)$")


def drawn(text: str) -> tuple[set[tuple[str, str]], dict[str, str]]:
    """The (parent, child) edges of the tree drawn in ``text`` and what each line says of its class."""
    edges: set[tuple[str, str]] = set()
    says: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or (m["name"] != "EtlError" and not m["marks"].strip()):  # neither the root nor a branch
            continue
        column = len(m["marks"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        if stack:
            edges.add((stack[-1][1], m["name"]))
        stack.append((column, m["name"]))
        says[m["name"]] = m["says"].strip()
    return edges, says


def real(classes: list[type[EtlError]]) -> set[tuple[str, str]]:
    """The (parent, child) edges among ``classes`` below EtlError."""
    return {(base.__name__, c.__name__) for c in classes for base in c.__bases__ if issubclass(base, EtlError)}


def every_error() -> list[type[EtlError]]:
    """EtlError and every subclass any service module defines (each module imported)."""
    for package in SERVICES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found, todo = [], [EtlError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_the_module_docstring_draws_every_class_of_the_module():
    assert errors.__doc__ is not None
    edges, says = drawn(errors.__doc__)
    mine = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, EtlError)]
    assert edges == real(mine)
    assert set(says) == {c.__name__ for c in mine}


def test_docs_errors_md_draws_every_error_class_of_the_services():
    edges, says = drawn((ROOT / "docs" / "errors.md").read_text())
    classes = every_error()
    assert edges == real(classes), "docs/errors.md: draw the missing classes, remove the ones that are gone"
    assert set(says) == {c.__name__ for c in classes}


@pytest.mark.parametrize("source", ["module", "docs"])
def test_each_branch_says_the_next_step_its_class_carries(source):
    text = errors.__doc__ if source == "module" else (ROOT / "docs" / "errors.md").read_text()
    _, says = drawn(text or "")
    for cls in every_error()[1:]:  # EtlError itself says nothing
        step = cls.next_step
        if cls.__base__ is EtlError:  # a first-level branch: the step is what the drawing says first
            assert step is not None and says[cls.__name__].startswith(f"{step.value}:"), cls
        else:  # below a branch: the step is inherited, never changed
            assert step == cls.__base__.next_step, cls
    assert EtlError.next_step is None and {c.next_step for c in EtlError.__subclasses__()} == set(NextStep)
