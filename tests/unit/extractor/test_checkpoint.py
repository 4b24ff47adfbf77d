"""The run's seen ids (bitmap and set), how ids are told apart and written in a message."""

import orjson
import pytest

from extractor.checkpoint import SeenIds, id_ranges, user_id


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"id": 7}, 7),
        ({"id": 0}, 0),
        ({"id": "u-7"}, "u-7"),
        ({"id": ""}, None),
        ({"id": True}, None),  # a bool is not an id, though Python calls it an int
        ({"id": None}, None),
        ({"id": [1]}, None),
        ({}, None),
        ("not a user", None),
    ],
)
def test_user_id_takes_integers_and_non_empty_strings_only(user, expected):
    assert user_id(user) == expected


@pytest.mark.parametrize("uid", [0, 1, 7, 8, 1000, 2**27 - 1, 2**27, 2**40, -1, "7", "abc"])
def test_seen_ids_remember_every_kind_of_id_and_only_those(uid):
    seen = SeenIds()
    assert uid not in seen
    seen.add(uid)
    assert uid in seen
    others = {0, 1, 7, 8, 1000, 2**27 - 1, 2**27, 2**40, -1, "7", "abc"} - {uid}
    assert not any(o in seen for o in others)


def test_integer_and_string_ids_are_different_users():
    seen = SeenIds()
    seen.add(7)
    assert "7" not in seen


def test_a_million_small_ids_take_a_bitmap_not_a_set():
    seen = SeenIds()
    seen.update(range(1, 1_000_001))
    assert all(i in seen for i in (1, 500_000, 1_000_000)) and 1_000_001 not in seen
    assert len(seen.bits) < 300_000 and not seen.other


def test_lines_read_back_as_the_same_ids():
    lines = SeenIds.line([1, 2, "x"]) + SeenIds.line([900])
    seen = SeenIds()
    for line in lines.splitlines():
        seen.update(orjson.loads(line))
    assert all(i in seen for i in (1, 2, "x", 900)) and 3 not in seen


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        (list(range(1, 101)), "1-100"),
        ([5, 3, 4, 9], "3-5, 9"),
        ([1, 3, 5, 7, 9, 11, 13], "1, 3, 5, 7, 9, ..."),
        (["a", 2], "2, 'a'"),
        ([], ""),
    ],
)
def test_id_ranges_are_short(ids, text):
    assert id_ranges(ids) == text
