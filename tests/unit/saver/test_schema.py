"""A run's schema merged from page summaries, and its drift against the previous run."""

from saver.schema import contract_words, drift, merge, words


def page(records: int, **fields: tuple[int, dict]) -> dict:
    return {
        "records": records,
        "fields": {p.replace("__", "."): {"present": n, "types": t} for p, (n, t) in fields.items()},
    }


def test_pages_merge_into_counts_nulls_missing_and_rates():
    run = merge([page(2, a=(2, {"integer": 2}), b=(1, {"null": 1})), page(2, a=(1, {"string": 1}))])
    assert run["records"] == 4 and run["pages"] == 2
    assert run["fields"]["a"] == {
        "present": 3,
        "types": {"integer": 2, "string": 1},
        "nulls": 0,
        "missing": 1,
        "null_rate": 0.25,
    }
    assert run["fields"]["b"] == {"present": 1, "types": {"null": 1}, "nulls": 1, "missing": 3, "null_rate": 1.0}


def test_drift_names_added_removed_type_and_null_rate_changes():
    before = merge(
        [
            page(
                10,
                age=(10, {"integer": 10}),
                maidenName=(10, {"string": 10}),
                hair=(10, {"object": 10}),
                hair__color=(10, {"string": 10}),
                phone=(10, {"string": 10}),
            )
        ]
    )
    now = merge(
        [page(10, age=(10, {"string": 10}), nickname=(10, {"string": 10}), phone=(7, {"string": 5, "null": 2}))]
    )
    changes = drift(now, before, 0.1)
    assert [(c["change"], c["field"]) for c in changes] == [
        ("added", "nickname"),
        ("removed", "hair"),  # hair.color goes with it
        ("removed", "maidenName"),
        ("type_changed", "age"),
        ("null_rate", "phone"),
    ]
    assert changes[-1]["before"] == 0.0 and changes[-1]["after"] == 0.5
    assert words(changes[3], "r1") == "schema drift against run r1: age changed type from integer to string"
    assert drift(now, before, 0.6)[-1]["change"] == "type_changed"  # a rise of 50 points is under 0.6


def test_integers_and_numbers_are_one_kind_and_empty_runs_have_no_drift():
    before = merge([page(2, height=(2, {"integer": 2}))])
    now = merge([page(2, height=(2, {"integer": 1, "number": 1}))])
    assert drift(now, before, 0.1) == []
    assert drift(merge([page(0)]), before, 0.1) == [] and drift(before, merge([]), 0.1) == []


def test_contract_violations_merge_and_read_as_one_line():
    c = {
        "name": "users.v1",
        "policy": "freeze",
        "records": 2,
        "discarded": 0,
        "violations": {"age": {"expected": "integer", "got": {"string": 2}}},
    }
    run = merge([{**page(2), "contract": c}, {**page(1), "contract": {**c, "records": 1, "violations": {}}}])
    assert run["contract"]["records"] == 3 and run["contract"]["violations"]["age"]["got"] == {"string": 2}
    assert contract_words(run["contract"]) == (
        "contract users.v1: 3 records broke it, made invalid (policy freeze): age (string x2; expected integer)"
    )
    assert contract_words({**c, "records": 0}) is None
