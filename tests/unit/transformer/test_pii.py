"""PII policy and department lookup."""

import pytest

from dummyjson.users import DEPARTMENTS, make_user
from transformer import pii
from transformer.enrich import UNKNOWN, department_code, load_departments


def test_mask_keeps_last_four():
    assert pii.mask("900-590-289") == "*******-289"
    assert pii.mask("123") == "***"
    assert pii.mask(None) is None


@pytest.mark.parametrize("policy", ["mask", "drop", "keep"])
def test_password_always_dropped(policy):
    out = pii.protect(make_user(1), policy)
    assert "password" not in out


def test_mask_policy_masks_every_sensitive_field_without_touching_the_input():
    user = make_user(7)
    out = pii.protect(user, "mask")
    assert out["ssn"][-4:] == user["ssn"][-4:] and out["ssn"] != user["ssn"]
    assert out["bank"]["cardNumber"] == "*" * 12 + user["bank"]["cardNumber"][-4:]
    assert out["bank"]["iban"].endswith(user["bank"]["iban"][-4:]) and out["bank"]["iban"].startswith("*")
    assert out["crypto"]["wallet"].startswith("*") and out["ein"].startswith("*")
    assert "password" in user and user["bank"]["cardNumber"].isdigit()


def test_drop_policy_removes_fields():
    out = pii.protect(make_user(7), "drop")
    assert "ssn" not in out and "cardNumber" not in out["bank"] and "wallet" not in out["crypto"]


def test_non_objects_pass_through():
    assert pii.protect("text") == "text"
    assert pii.protect({"bank": "not an object"})["bank"] == "not an object"


def test_lookup_covers_all_twelve_departments_ignoring_case_and_spaces():
    table = load_departments()
    assert len(table) == 12
    for name in DEPARTMENTS:
        assert department_code(table, f"  {name.upper()} ") != UNKNOWN
    assert department_code(table, "Astrology") == UNKNOWN


def test_bad_lookup_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("name,code\nX,Y\n")
    with pytest.raises(ValueError, match="header must be"):
        load_departments(bad)
    with pytest.raises(ValueError, match="unreadable"):
        load_departments(tmp_path / "missing.csv")
