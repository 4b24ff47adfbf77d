"""The rule ``nul``: a record holding U+0000 anywhere is invalid, and no text handed on holds the character."""

import orjson

from dummyjson.users import make_user
from etl_common.jsontext import QUARANTINE
from transformer.contract import Contract
from transformer.enrich import load_departments
from transformer.transform import transform_page
from transformer.validate import NUL, NUL_FIELDS_NAMED, nul_problems

DEPARTMENTS = load_departments()


def _texts(value):
    """Every string of ``value``, keys included."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (str(k), *_texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return [value] if isinstance(value, str) else []


def test_each_field_holding_it_is_named_never_its_value():
    record = {"a": "x\x00", "b": {"c\x00d": 1, "e": ["ok", "\x00"]}, "ssn": "12\x0034"}
    found = nul_problems(record)
    assert found == [
        "a: holds the NUL character U+0000",
        "b.c\\u0000d: the field name holds the NUL character U+0000",
        "b.e[]: holds the NUL character U+0000",
        "ssn: holds the NUL character U+0000",
    ]
    assert {p.rule for p in found} == {NUL} and not any("\x00" in p or "12" in p for p in found)
    assert nul_problems(make_user(1)) == []


def test_a_reason_names_a_bounded_number_of_fields():
    found = nul_problems({f"f{i}": "\x00" for i in range(NUL_FIELDS_NAMED + 5)})
    assert len(found) == NUL_FIELDS_NAMED + 1 and found[-1] == "and 5 more fields hold the NUL character U+0000"


def test_a_record_holding_it_is_invalid_and_nothing_handed_on_holds_it():
    bad = {**make_user(1), "lastName": "a\x00", "w\x00": 1}
    deep = '{"a": ' * 70 + '"x\x00"' + "}" * 70  # a cut-out deep container keeps the source's raw text
    quarantined = {QUARANTINE: {"reason": "a\x00: nested deeper than 64 levels", "text": deep}}
    page = [make_user(2), bad, quarantined]
    out = transform_page(page, DEPARTMENTS, contract=Contract({"type": "object"}, "c", "freeze"))
    assert [v["pos"] for v in out["valid"]] == [0]
    assert [(i["pos"], i["rules"]) for i in out["invalid"]] == [(1, [NUL]), (2, ["record"])]
    assert out["invalid"][0]["error_reason"] == (
        "lastName: holds the NUL character U+0000; w\\u0000: the field name holds the NUL character U+0000"
    )
    assert "w\\u0000" in out["schema"]["fields"]
    handed_on = {k: v for k, v in out.items() if k != "raw"}
    assert not any("\x00" in t for t in _texts(handed_on))
    assert '"x\\u0000"' in out["invalid"][1]["raw_line"]
    assert orjson.loads(orjson.dumps(out["raw"][1]))["lastName"] == "a\x00"  # the raw copy keeps the value


def test_a_page_whose_text_has_no_escape_is_not_searched():
    bad = {**make_user(1), "lastName": "a\x00"}
    assert transform_page([bad], DEPARTMENTS, may_hold_nul=False)["invalid"] == []
