"""The chart's README is generated from values.schema.json and values.yaml, and kept up to date."""

import json

import yaml

from testbed import chartdocs
from testbed.chart import CHART


def _leaves(values: dict, schema: dict, path: str = "") -> dict[str, object]:
    """Key path -> default (None when values.yaml has none) of every value that is not an object with properties."""
    out: dict[str, object] = {}
    for name, sub in schema["properties"].items():
        key = f"{path}.{name}" if path else name
        if sub.get("type") == "object" and "properties" in sub:
            out |= _leaves(values.get(name) or {}, sub, key)
        else:
            out[key] = values.get(name)
    return out


def test_the_readme_is_what_the_generator_writes():
    assert chartdocs.README.read_text() == chartdocs.render(), "run make chart-readme"
    assert chartdocs.main(["--check"]) == 0


def test_every_value_has_its_row_with_its_default_and_description():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in chartdocs.render().splitlines()
        if line.startswith("| `")
    }
    leaves = _leaves(values, schema)
    assert set(rows) == set(leaves)
    assert "saver.retention.deadLetters.runs" in rows and "secrets.apiOperatorToken" in rows
    assert (
        "`2048`" in rows["saver.retention.vacuumPages"]
        and "ETL_RETENTION_VACUUM_PAGES" in rows["saver.retention.vacuumPages"]
    )
    for key, default in leaves.items():
        if default is not None:
            assert json.dumps(default, ensure_ascii=False).replace("|", "\\|") in rows[key], key


def test_chart_metadata_for_artifact_hub():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"] and chart["sources"] and chart["icon"] and chart["maintainers"][0]["name"]
    notes = chart["annotations"]
    images = yaml.safe_load(notes["artifacthub.io/images"])
    assert {i["name"] for i in images} >= {"etl-extractor", "etl-transformer", "etl-saver", "etl-api", "redis"}
    assert all(i["image"].endswith(":" + chart["appVersion"]) for i in images if i["name"].startswith("etl-"))
    assert all(
        c["kind"] in ("added", "changed", "deprecated", "removed", "fixed", "security")
        for c in yaml.safe_load(notes["artifacthub.io/changes"])
    )
