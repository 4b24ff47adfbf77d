"""transform_page and the PII policy: a page the extractor protected is handed on as it is, any other is protected."""

import json

from dummyjson.users import make_user
from etl_common import pii
from etl_common.jsontext import QUARANTINE
from transformer.enrich import load_departments
from transformer.transform import transform_page

DEPARTMENTS = load_departments()


def _quarantined(text):
    return {QUARANTINE: {"reason": "age: NaN is not a number", "text": text}}


def test_a_page_not_marked_as_protected_is_protected():
    users = [make_user(1), make_user(2)]
    secret = {"password": "hunter2-secret", "ssn": "123-45-6789", "age": float("nan")}
    out = transform_page([*users, "not an object", _quarantined(json.dumps(secret))], DEPARTMENTS)
    text = json.dumps(out)
    for user in users:
        assert user["password"] not in text and user["ssn"] not in text and user["bank"]["iban"] not in text
    assert "hunter2-secret" not in text and "*******6789" in text
    assert [v["pos"] for v in out["valid"]] == [0, 1] and [i["pos"] for i in out["invalid"]] == [2, 3]


def test_a_page_the_extractor_protected_is_handed_on_as_it_is():
    """No second pass over records that already went through the same policy: the very objects go on."""
    users = [pii.protect(make_user(1)), pii.protect(make_user(2))]
    quarantined = _quarantined(pii.protect_text('{"ssn": "123-45-6789", "age": NaN}'))
    out = transform_page([*users, quarantined, _quarantined(None)], DEPARTMENTS, protected=True)
    assert out["raw"][0] is users[0] and out["raw"][1] is users[1]
    assert out["raw"][2] == quarantined[QUARANTINE]["text"] and "*******6789" in out["raw"][2]
    assert out["raw"][3] is None and "withheld because it could not be masked" in out["invalid"][1]["error_reason"]
    assert [v["pos"] for v in out["valid"]] == [0, 1]
