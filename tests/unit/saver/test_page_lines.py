"""The dead-letter lines the saver appends while loading: spliced from the record's JSON, byte for byte the line
``files.invalid_line`` writes from the table's row."""

import orjson
import pytest

from dummyjson.users import make_user
from saver.files import invalid_line
from saver.userrows import _dlq_line

RECORDS = [
    make_user(1),
    {},
    {"error_reason": "kept from the source", "id": 2},  # the key is there: replaced in place, not added
    {"id": 3, "note": 'says "error_reason": in a value'},
    {"id": 4, "name": "Ünïcode ✓", "nested": {"error_reason": 1}, "list": [1, 2.5, None, True]},
    {"id": 5, "text": "line\nbreak \\ back\\slash \x7f"},
]
REASONS = ["age: 17 is below 18; email: missing", 'quote " and \\ and \n', "Ünïcode ✓", ""]


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("reason", REASONS)
def test_the_spliced_dead_letter_line_is_the_one_written_from_the_table(record, reason):
    text = orjson.dumps(record)
    assert _dlq_line(text, reason) == invalid_line((text.decode(), None, reason))
