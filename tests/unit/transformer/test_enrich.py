"""The department lookup: every department found whatever its case and spacing; a bad table is a clear error."""

import pytest

from dummyjson.users import DEPARTMENTS
from transformer.enrich import UNKNOWN, department_code, load_departments


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
