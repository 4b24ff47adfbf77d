"""The extractor's tolerant page reader: what passes as it is, what is quarantined with which reason."""

import json

import orjson
import pytest

from etl_common import pii
from extractor.pagejson import QUARANTINE, RECORD_MAX_DEPTH, protected, read_page


def _page(*records: bytes) -> bytes:
    return b'{"users":[' + b",".join(records) + b'],"total":%d}' % len(records)


def _nested(depth: int) -> bytes:
    """A record whose nesting is ``depth`` levels, the record object included."""
    return b'{"id":1,"meta":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def _reason(record) -> str | None:
    return record[QUARANTINE]["reason"] if isinstance(record, dict) and QUARANTINE in record else None


@pytest.mark.parametrize("depth", [RECORD_MAX_DEPTH - 1, RECORD_MAX_DEPTH, RECORD_MAX_DEPTH + 1, 254, 255, 1100])
def test_the_depth_rule_is_the_same_on_the_fast_and_the_exact_reader(depth):
    """orjson reads the first page, the standard library the second (NaN): the verdict on depth must agree."""
    fast = read_page(_page(_nested(depth)))["users"][0]
    exact = read_page(_page(_nested(depth), b'{"age":NaN}'))["users"][0]
    too_deep = depth > RECORD_MAX_DEPTH
    assert _reason(fast) == _reason(exact)
    assert (_reason(fast) == f"meta: nested deeper than {RECORD_MAX_DEPTH} levels") is too_deep
    if not too_deep:
        assert fast == exact == json.loads(_nested(depth))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"NaN", "age: NaN is not a number"),
        (b"-Infinity", "age: -Infinity is not a number"),
        (b"1e309", "age: 1e309 is beyond the range of a 64-bit float"),
        (b"1e-400", "age: 1e-400 has more digits than a 64-bit float holds"),
        (b"3.14159265358979323846", "age: 3.14159265358979323846 has more digits than a 64-bit float holds"),
        (b"-9223372036854775809", "age: -9223372036854775809 is outside the 64-bit integer range"),
        (b"18446744073709551616", "age: 18446744073709551616 is outside the 64-bit integer range"),
        (b"1" * 5000, "age: an integer of 5000 digits is outside the 64-bit integer range"),
        (b'"\\udbff"', "age: not valid Unicode (lone surrogate U+DBFF, half of a character)"),
        (b'"\\udc80"', "age: not valid Unicode (byte 0x80 is not UTF-8, or a lone surrogate U+DC80)"),
        (b'"a\xe2\x82"', "age: not valid Unicode (byte 0xE2 is not UTF-8, or a lone surrogate U+DCE2)"),
        (b'{"ok": [1, {"x": NaN}]}', "age.ok[1].x: NaN is not a number"),
    ],
)
def test_a_value_no_strict_reader_takes_quarantines_its_record_with_the_field(value, reason):
    users = read_page(_page(b'{"id":1,"age":' + value + b"}", b'{"id":2,"age":30.5,"big":18446744073709551615}'))[
        "users"
    ]
    assert _reason(users[0]) == reason
    assert users[1] == {"id": 2, "age": 30.5, "big": 2**64 - 1}
    orjson.dumps(users)  # what the extractor hands on is always writable


@pytest.mark.parametrize(
    "value", [b"1e2", b"2.5E1", b"0.30000000000000004", b"9223372036854775808", b"12345678901234567"]
)
def test_numbers_a_double_or_64_bits_hold_exactly_pass(value):
    (user,) = read_page(_page(b'{"n":' + value + b"}"))["users"]
    assert user == {"n": json.loads(value)}


@pytest.mark.parametrize(
    "value",
    [b"30", b"30.5", b"-0.0", b"1e2", b"12345678901234567", b"0.1000000000000000055511151231257827", b"NaN"],
)
def test_a_page_reads_the_same_whether_orjson_writes_it_back_byte_for_byte_or_not(value):
    """A compact page orjson writes back as it came skips the look for inexact numbers: the verdict must agree."""
    compact = _page(b'{"id":1,"age":' + value + b',"s":"x"}')
    spaced = b'{ "users": [ { "id": 1, "age": ' + value + b', "s": "x" } ], "total": 1 }'
    assert read_page(compact) == read_page(spaced)


def test_the_quarantined_text_keeps_numbers_and_escapes_as_written():
    text = b'{"id":18446744073709551616,"h":0.1000000000000000055511151231257827,"n":"Dana \\ud83d","x":NaN}'
    (user,) = read_page(_page(text))["users"]
    kept = user[QUARANTINE]["text"]
    assert kept.isascii()
    assert kept == text.decode()


@pytest.mark.parametrize("field", [*pii.SENSITIVE, *pii.DROPPED, "SSN", "card_number", "PassWord"])
def test_a_secret_field_never_shows_its_value_in_a_reason(field):
    (user,) = read_page(_page(b'{"%s":123456789012345678901234567}' % field.encode()))["users"]
    assert "123456789" not in _reason(user) and "the value" in _reason(user)


def test_protected_masks_a_quarantined_records_text_and_every_other_record():
    users = read_page(_page(b'{"id":1,"password":"pw1","ssn":NaN}', b'{"id":2,"password":"pw2","ssn":"123-45-6789"}'))
    bad, good = (protected(u, "mask") for u in users["users"])
    assert "pw1" not in bad[QUARANTINE]["text"] and "password" not in bad[QUARANTINE]["text"]
    assert good == {"id": 2, "ssn": "*******6789"}


def test_items_that_are_not_objects_are_checked_too():
    users = read_page(_page(b"NaN", b"[" * 100 + b"]" * 100, rb'["\\ud800", "\ud800"]', b"[1, 2]"))["users"]
    assert [_reason(u) for u in users] == [
        "record: NaN is not a number",
        "record: nested deeper than 64 levels",
        "[1]: not valid Unicode (lone surrogate U+D800, half of a character)",
        None,
    ]


def test_a_page_that_is_not_json_even_so_is_refused():
    for body in (b"<html>502</html>", b'{"users":[1,2', b""):
        with pytest.raises(ValueError):
            read_page(body)
