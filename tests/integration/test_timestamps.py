"""One timestamp format everywhere, and a run never finishes before it starts, even in a burst of runs."""

import re

from tests.faults.conftest import wait_for

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_a_burst_of_runs_keeps_start_before_finish_in_one_format(make_source, make_pipeline):
    p = make_pipeline(make_source(count=5))
    p.start_workers()
    for _ in range(4):  # within a second or two: the file-name stamps have to move apart
        assert p.extract().returncode == 0
    wait_for(lambda: len(p.runs()) == 4 and all(r["status"] == "succeeded" for r in p.runs()), what="4 runs")
    runs = p.runs()
    assert len({r["raw_file"] for r in runs}) == 4  # distinct file names
    for run in runs:
        for column in ("run_timestamp", "started_at", "finished_at", "updated_at"):
            assert ISO_MS.match(run[column]), (column, run[column])
        assert run["started_at"] <= run["finished_at"], dict(run)
    with p.db() as db:
        for table in ("raw_users", "processed_users", "uploaded_files", "schema_migrations"):
            column = {"uploaded_files": "uploaded_at", "schema_migrations": "applied_at"}.get(table, "inserted_at")
            for (value,) in db.execute(f"SELECT {column} FROM {table}"):
                assert ISO_MS.match(value), (table, value)
