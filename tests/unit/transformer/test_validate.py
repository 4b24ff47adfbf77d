"""Business rules: every broken rule reported, in words a person can act on."""

import pytest

from dummyjson.users import BREAKAGES, make_bad_user, make_user
from transformer.validate import problems


def test_generated_users_are_valid():
    assert all(problems(make_user(i)) == [] for i in range(1, 300))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"age": 17}, ["age: 17 is below 18"]),
        ({"age": 18}, []),
        ({"age": 65}, []),
        ({"age": 65.5}, ["age: 65.5 is above 65"]),
        ({"age": "30"}, ["age: '30' is not a number"]),
        ({"email": "a@@b.com"}, None),
        ({"id": 3.0}, ["id: 3.0 is not an integer"]),
        ({"id": True}, ["id: True is not an integer"]),
        ({"firstName": "\t "}, ["firstName: is blank"]),
        ({"company": {"department": ""}}, ["company.department: is empty"]),
        ({"firstName": 5}, ["firstName: 5 is not a string"]),
        ({"company": {"department": 7}}, ["company.department: 7 is not a string"]),
        ({"company": "acme"}, ["company: 'acme' is not an object"]),
    ],
)
def test_single_rules(changes, expected):
    record = {**make_user(1), **changes}
    got = problems(record)
    if expected is None:
        assert len(got) == 1 and got[0].startswith("email: 'a@@b.com' is not a valid address")
    else:
        assert got == expected


def test_every_rule_reported_together():
    got = problems({"id": "x", "firstName": "", "email": None, "age": 10, "company": {}})
    assert got == [
        "id: 'x' is not an integer",
        "firstName: is blank",
        "email: missing",
        "age: 10 is below 18",
        "company.department: missing",
    ]


def test_long_values_are_shortened_in_reasons():
    (reason,) = problems({**make_user(1), "age": "9" * 500})
    assert len(reason) < 80 and reason.endswith("is not a number")


# The exact reasons of each breakage the source serves (--bad-every) and the fault tests use.
BROKEN_RULES = {
    "age below 18": ["age: 17 is below 18"],
    "age above 65": ["age: 66 is above 65"],
    "email missing": ["email: missing"],
    "email malformed": ["email: 'not-an-email' is not a valid address (An email address must have an @-sign.)"],
    "first name blank": ["firstName: is blank"],
    "id not an integer": ["id: 'abc' is not an integer"],
    "department empty": ["company.department: is empty"],
    "age not a number": ["age: 'thirty' is not a number"],
    "everything broken": [
        "firstName: is blank",
        "email: missing",
        "age: 12 is below 18",
        "company.department: missing",
    ],
}


@pytest.mark.parametrize("kind", range(len(BREAKAGES)), ids=[name for name, _ in BREAKAGES])
def test_catalogue_of_broken_users_is_invalid(kind):
    """Each breakage breaks exactly its named rules, nothing else (a new breakage needs its rules here)."""
    name = BREAKAGES[kind][0]
    assert problems(make_bad_user(5, kind)) == BROKEN_RULES[name]
    assert problems(make_bad_user(6, kind, seed=3)) == BROKEN_RULES[name]  # whoever the user is


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        (2**63, "id: 9223372036854775808 is outside the 64-bit integer range"),
        (-(2**63) - 1, "id: -9223372036854775809 is outside the 64-bit integer range"),
        (2**63 - 1, None),
        (-(2**63), None),
    ],
)
def test_an_id_outside_sqlites_integers_is_invalid(uid, reason):
    record = {"id": uid, "firstName": "A", "email": "a@example.com", "age": 30, "company": {"department": "Sales"}}
    assert problems(record) == ([reason] if reason else [])


def test_a_string_holding_json_is_named_double_encoded():
    assert problems('{"id": 1}') == [
        "record: expected a JSON object, got a string holding an object (double-encoded JSON)"
    ]
    assert problems("[1]") == ["record: expected a JSON object, got a string holding an array (double-encoded JSON)"]
    assert problems("{nope") == ["record: expected a JSON object, got str"]
