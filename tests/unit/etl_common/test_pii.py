"""The PII policy: the password always dropped, sensitive fields masked or dropped, the input untouched."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dummyjson.users import make_user
from etl_common import jsontext, pii


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


class TestPolicyOnEveryShape:
    """The password goes and the sensitive fields are masked whatever shape the record has."""

    USER = {"id": 1, "password": "hunter2-secret", "ssn": "123-45-6789", "bank": {"iban": "DE89370400440532013000"}}

    def _clean(self, out) -> None:
        text = out if isinstance(out, str) else json.dumps(out)
        assert "hunter2-secret" not in text and "123-45-6789" not in text and "DE8937040044" not in text
        assert "6789" in text and "3000" in text

    def test_object_array_and_double_encoded(self):
        self._clean(pii.protect(self.USER))
        self._clean(pii.protect([self.USER, [self.USER]]))
        self._clean(pii.protect(json.dumps(self.USER)))
        self._clean(pii.protect(json.dumps(json.dumps([self.USER]))))
        self._clean(pii.protect([json.dumps(json.dumps(json.dumps(self.USER)))]))

    def test_text_encoded_too_many_times_is_withheld(self):
        text = json.dumps(self.USER)
        for _ in range(10):
            text = json.dumps(text)
        out = pii.protect(text)
        assert "hunter2-secret" not in out and "withheld: JSON encoded in strings" in out

    def test_text_with_non_standard_values(self):
        text = json.dumps(self.USER)[:-1] + ', "age": NaN, "n": "\\ud83d", "big": 18446744073709551616}'
        out = pii.protect_text(text)
        self._clean(out)
        assert "NaN" in out and "\\ud83d" in out and "18446744073709551616" in out

    def test_text_that_cannot_be_read_is_withheld(self):
        assert pii.protect_text('{"password": "hunter2-secret", ') is None

    def test_other_values_pass(self):
        for value in (1, None, True, 1.5, "plain text", "{not json"):
            assert pii.protect(value) == value


@pytest.mark.parametrize(
    ("record", "kept"),
    [
        # Field names in any case or separator style, at any depth.
        ({"Password": "p1", "PASSWORD": "p2", "pass_word": "p3", "id": 1}, {"id": 1}),
        ({"extra": {"password": "p4", "list": [{"password": "p5"}]}}, {"extra": {"list": [{}]}}),
        ({"SSN": "123-45-6789"}, {"SSN": "*******6789"}),
        ({"profile": {"card_number": "4000056655665556"}}, {"profile": {"card_number": "************5556"}}),
        # A sensitive field holding an array or an object is masked leaf by leaf, never turned into text.
        ({"bank": {"cardNumber": ["4000056655665556"]}}, {"bank": {"cardNumber": ["************5556"]}}),
        ({"crypto": [{"wallet": "0x1111222233334444"}]}, {"crypto": [{"wallet": "**************4444"}]}),
        ({"ein": {"value": 123456789, "ok": True}}, {"ein": {"value": "*****6789", "ok": "****"}}),
    ],
)
def test_every_shape_and_spelling_of_a_secret_is_protected(record, kept):
    assert pii.protect(record, "mask") == kept


def test_a_field_given_as_json_text_is_read_and_protected():
    record = {"id": 1, "bank": '{"cardNumber": "4000056655665556", "iban": "GB82WEST12345698765432", "x": 1}'}
    out = pii.protect(record, "mask")
    assert json.loads(out["bank"]) == {"cardNumber": "************5556", "iban": "******************5432", "x": 1}


@pytest.mark.parametrize("policy", pii.POLICIES)
def test_the_policy_is_idempotent(policy):
    """The extractor and the transformer both apply it: twice is the same as once."""
    record = {"password": "p", "ssn": "123-45-6789", "bank": {"iban": ["GB82WEST12345698765432"]}, "n": "x"}
    once = pii.protect(record, policy)
    assert pii.protect(once, policy) == once and "password" not in once


# The fast path (only the objects and arrays on the way to a secret are rebuilt, field names classified once)
# must give exactly what rebuilding every level with a fresh look at every name gives: the definition below.
def _reference(record, policy="mask", encodings=0):
    """The policy as first written: every level copied, every field name normalised with a regex."""
    import re

    def norm(name):
        return re.sub(r"[^0-9a-z]", "", name.lower())

    if isinstance(record, dict):
        out = {}
        for key, value in record.items():
            name = norm(key) if isinstance(key, str) else ""
            if name == "password" or (name in {"ssn", "ein", "cardnumber", "iban", "wallet"} and policy == "drop"):
                continue
            if name in {"ssn", "ein", "cardnumber", "iban", "wallet"} and policy == "mask":
                out[key] = pii.mask(value)
            else:
                out[key] = _reference(value, policy, encodings)
        return out
    if isinstance(record, list):
        return [_reference(item, policy, encodings) for item in record]
    if isinstance(record, str) and record.lstrip()[:1] in ("{", "[", '"'):
        try:
            value, cuts = jsontext.loads_tolerant(record, 64)
        except ValueError:
            return record
        if not isinstance(value, (dict, list, str)):
            return record
        if encodings >= 8:
            return pii.WITHHELD
        protected = _reference(value, policy, encodings + 1)
        return record if protected == value else jsontext.dumps_exact(protected, cuts)
    return record


# Field names: every spelling of every secret, near misses, and ordinary names.
_NAMES = st.sampled_from(
    "password Password PASS_WORD pass-word ssn S.S.N Ssn ein EIN cardNumber card_number CARD-NUMBER iban IBan "
    "wallet Wallet_ passwords ssn2 bank crypto id name einstein x".split()
) | st.text(max_size=8)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["{", "[1, 2", ' {"ssn": "123-45-6789"}', '\n["x"]', '"\\"s\\""', "\u3000{}", "{not json"])
)


def _values(leaves):
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(_NAMES, inner, max_size=5)
            # JSON inside a string, once or more, with JSON's white space around it.
            | st.tuples(inner, st.sampled_from(["", " ", "\n\t"])).map(lambda v: v[1] + json.dumps(v[0]))
        ),
        max_leaves=25,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=_values(_SCALARS), policy=st.sampled_from(pii.POLICIES))
def test_the_fast_path_gives_what_the_definition_gives_and_leaves_the_input_alone(record, policy):
    before = copy.deepcopy(record)
    out = pii.protect(record, policy)
    assert out == _reference(before, policy)
    assert record == before  # nothing of the input is changed, however much of it the result shares
    assert pii.protect(out, policy) == out


def test_a_record_without_secrets_is_handed_on_as_it_is_and_untouched_parts_are_shared():
    """What makes the policy cheap: no copy of what carries no secret, no re-encoding of JSON text that has none."""
    user = make_user(3)
    clean = {k: v for k, v in user.items() if not pii.is_secret(k) and k not in ("bank", "crypto")}
    assert pii.protect(clean) is clean
    text = json.dumps(clean)
    assert pii.protect({"blob": text})["blob"] is text
    out = pii.protect(user)
    assert out is not user and out["address"] is user["address"] and out["company"] is user["company"]
    assert out["bank"] is not user["bank"] and out["bank"]["cardNumber"].startswith("*")


def test_every_spelling_is_found_even_once_the_name_cache_is_full():
    """The names seen are classified once and kept (bounded): names past the bound are classified each time."""
    for i in range(5000):
        pii.protect({f"field{i}": 1})
    record = {"Pass_Word_": "p", "new-name": {"S-S-N": "123456789"}, "CardNumber9": "x"}
    assert pii.protect(record) == {"new-name": {"S-S-N": "*****6789"}, "CardNumber9": "x"}
    assert pii.is_secret("I_B_A_N") and not pii.is_secret("ibans")


@pytest.mark.parametrize("lead", ["", " ", "\n", "\t\r "])
def test_json_text_after_white_space_is_read(lead):
    record = {"note": lead + json.dumps({"password": "hunter2-secret", "ssn": "123-45-6789"})}
    out = pii.protect(record)
    assert "hunter2-secret" not in out["note"] and "*******6789" in out["note"]
