"""Renders and lints charts/etl with Helm's own engine (helm-python-sdk), so no helm binary is needed.

python -m testbed.chart lint [-f VALUES]...           # helm lint --strict, per values file
python -m testbed.chart template [-f VALUES]... [--name N] [--namespace NS]
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml
from helm_python import chart as helm_chart

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "etl"
# Lint findings of these severities fail `make helm-lint` (2 = warning, 3 = error).
FAILING = 2


def load_values(files: list[str | Path]) -> dict[str, Any]:
    """Values files merged left to right, as `helm -f a -f b` does (maps deep-merged, the rest replaced)."""
    merged: dict[str, Any] = {}
    for f in files:
        merged = _merge(merged, yaml.safe_load(Path(f).read_text()) or {})
    return merged


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any] | None = None, name: str = "etl", namespace: str = "etl") -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), validated against values.schema.json."""
    with helm_python.Chart.load(str(CHART)) as chart:
        return chart.render(values=values or {}, name=name, namespace=namespace, is_install=True)


def objects(values: dict[str, Any] | None = None, name: str = "etl", namespace: str = "etl") -> list[dict[str, Any]]:
    """The rendered Kubernetes objects (hooks included), in template order."""
    out: list[dict[str, Any]] = []
    for path, text in sorted(render(values, name, namespace).items()):
        if path.endswith(".yaml"):
            out.extend(d for d in yaml.safe_load_all(text) if d)
    return out


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """helm lint --strict on the chart with ``values``."""
    return helm_chart.lint(str(CHART), values or {}, strict=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["lint", "template"])
    parser.add_argument("-f", "--values", action="append", default=[], help="values file (repeatable)")
    parser.add_argument("--name", default="etl")
    parser.add_argument("--namespace", default="etl")
    args = parser.parse_args(argv)
    if args.command == "template":
        for path, text in sorted(render(load_values(args.values), args.name, args.namespace).items()):
            if path.endswith(".yaml") and text.strip():
                print(f"---\n# Source: {path}\n{text.strip()}")
        return 0
    sets = [[f] for f in args.values] or [[]]
    failed = False
    for files in sets:
        report = lint(load_values(files))
        label = files[0] if files else "default values"
        for msg in report["messages"]:
            level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(msg["severity"], "UNKNOWN")
            print(f"[{level}] {label}: {msg['path']}: {msg['error']}")
            failed |= msg["severity"] >= FAILING
        failed |= bool(report["errors"])
        print(f"{label}: {'FAILED' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
