"""Helpers over rendered chart objects: value sets, workloads, pod specs and containers."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed import chart

CI_VALUES = sorted((chart.CHART / "ci").glob("*-values.yaml"))
# Every value set the chart is checked with: the defaults and each ci/*-values.yaml.
VALUE_SETS: dict[str, dict] = {"default": {}, **{p.stem: chart.load_values([p]) for p in CI_VALUES}}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob", "Job", "Pod", "DaemonSet"}


def render_objects(values: dict | None = None) -> list[dict]:
    return chart.objects(values or {})


def engine(name: str) -> str:
    """The database engine value set ``name`` chooses (database.engine; sqlite by default)."""
    return str(VALUE_SETS[name].get("database", {}).get("engine", "sqlite"))


def sets_on(db_engine: str) -> list[str]:
    """Names of the value sets on one database engine."""
    return sorted(n for n in VALUE_SETS if engine(n) == db_engine)


def pod_spec(obj: dict) -> dict:
    """The pod spec of a workload object."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def containers(objs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(workload, container) for every container and init container."""
    for w in workloads(objs):
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield w, c


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def by_component(objs: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objs if o["kind"] == kind and component(o) == name]
    return found


def is_hook(obj: dict) -> bool:
    return "helm.sh/hook" in obj["metadata"].get("annotations", {})


def values_file_keys(path: Path) -> list[tuple[str, str | None]]:
    """(dotted key, comment line just above it) for every key of a values.yaml, in order."""
    out: list[tuple[str, str | None]] = []
    stack: list[tuple[int, str]] = []
    prev_comment: str | None = None
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped:
            prev_comment = None
            continue
        if stripped.startswith("#"):
            prev_comment = prev_comment or stripped  # the first line of a comment block names the key
            continue
        indent = len(raw) - len(raw.lstrip())
        if stripped.startswith("-") or ":" not in stripped:
            prev_comment = None
            continue
        key = stripped.split(":", 1)[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        out.append((".".join([*parents, key]), prev_comment))
        rest = stripped.split(":", 1)[1].strip()
        if rest == "" or rest.startswith("#"):
            stack.append((indent, key))
        prev_comment = None
    return out


def get_path(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node
