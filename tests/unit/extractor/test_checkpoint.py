"""The run's seen ids (bitmap and set), how ids are told apart and written in a message."""

import orjson
import pytest

from extractor.checkpoint import SeenIds, id_ranges, user_id
from transformer.validate import problems

# What the transformer's id rule (etl_common.runs.is_user_id) accepts identifies a user; nothing else does.
VALID_IDS = [7, 1, 0, -1, 2**27, 2**63 - 1, -(2**63)]
BROKEN_IDS = [None, "abc", "7", "", 7.0, True, False, 2**63, -(2**63) - 1, {"id": 7}, [7]]


@pytest.mark.parametrize("uid", VALID_IDS)
def test_user_id_takes_the_ids_the_transformer_accepts(uid):
    assert user_id({"id": uid}) == uid
    assert not [p for p in problems({"id": uid}) if p.rule == "id"]


@pytest.mark.parametrize("uid", BROKEN_IDS)
def test_user_id_refuses_the_ids_the_transformer_rejects(uid):
    assert user_id({"id": uid}) is None
    assert [p for p in problems({"id": uid}) if p.rule == "id"]


@pytest.mark.parametrize("user", [{}, {"name": "x"}, "not a user", None, [{"id": 7}]])
def test_a_record_without_an_id_has_no_user_id(user):
    assert user_id(user) is None


def users(*ids):
    """Records with these ids (``MISSING``: no id key at all)."""
    return [{} if uid is MISSING else {"id": uid, "firstName": "Ann"} for uid in ids]


MISSING = object()


@pytest.mark.parametrize("uid", [*BROKEN_IDS, MISSING])
def test_a_broken_id_never_makes_a_page_look_repeated(uid):
    """A broken user on every page (the source's --bad-every) repeats nothing, on the page or across pages."""
    seen = SeenIds()
    duplicates, page_ids = seen.split(users(1, uid, 2, uid))
    assert (duplicates, page_ids) == ([], [1, 2])
    seen.update(page_ids)
    assert seen.split(users(3, uid, 4)) == ([], [3, 4])


@pytest.mark.parametrize("uid", VALID_IDS)
def test_a_valid_id_fetched_again_is_a_duplicate(uid):
    seen = SeenIds()
    duplicates, page_ids = seen.split(users(uid, "abc", 8 if uid != 8 else 9))
    assert duplicates == [] and page_ids[0] == uid
    seen.update(page_ids)
    assert seen.split(users("abc", uid, None, 10**6)) == ([uid], [10**6])  # the next page repeats it
    assert SeenIds().split(users(uid, uid, "abc", "abc")) == ([uid], [uid])  # twice on one page


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
