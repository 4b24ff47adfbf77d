"""The PII policy: the password always dropped, sensitive fields masked or dropped, the input untouched."""

import pytest

from dummyjson.users import make_user
from transformer import pii


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
    """Every sensitive field (ssn, ein, card number, IBAN, wallet) is gone; the rest stays; the input is untouched."""
    user = make_user(7)
    assert {"ssn", "ein"} <= set(user) and {"cardNumber", "iban"} <= set(user["bank"]) and user["crypto"]["wallet"]
    out = pii.protect(user, "drop")
    assert not {"ssn", "ein", "password"} & set(out)
    assert not {"cardNumber", "iban"} & set(out["bank"]) and "wallet" not in out["crypto"]
    assert out["bank"] == {k: v for k, v in user["bank"].items() if k not in ("cardNumber", "iban")}
    assert out["crypto"] == {k: v for k, v in user["crypto"].items() if k != "wallet"}
    assert {k: v for k, v in out.items() if k not in ("bank", "crypto")} == {
        k: v for k, v in user.items() if k not in ("ssn", "ein", "password", "bank", "crypto")
    }
    assert user["bank"]["iban"] and user["ein"]  # the input keeps its values


def test_non_objects_pass_through():
    assert pii.protect("text") == "text"
    assert pii.protect({"bank": "not an object"})["bank"] == "not an object"
