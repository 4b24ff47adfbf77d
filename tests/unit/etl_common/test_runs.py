"""The run contract (etl_common.runs) and the places that spell it: the SQL CHECK, the API, the console, the saver."""

import re
import sqlite3
from pathlib import Path
from typing import get_args

import orjson
import pytest

from api import models, records, sqlconsole
from etl_common import runs
from etl_common.runs import AT_REST, FINAL, TRANSITIONS, BadTransition, EventType, RunStatus, S
from saver import userrows
from saver.migrate import migrate

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def conn(tmp_path):
    db = sqlite3.connect(tmp_path / "data.db")
    db.row_factory = sqlite3.Row
    migrate(db)
    yield db
    db.close()


def test_the_sql_check_spells_the_statuses_of_the_enum(conn):
    """Parsed from the migrated table's SQL: the CHECK lists the enum's values in order; the default is INITIAL."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='etl_runs'").fetchone()
    check = re.search(r"CHECK\s*\(\s*status\s+IN\s*\(([^)]*)\)\s*\)", sql)
    assert check is not None, sql
    assert re.findall(r"'([^']*)'", check.group(1)) == [str(s) for s in RunStatus]
    default = re.search(r"status\s+TEXT\s+NOT\s+NULL\s+DEFAULT\s+'([^']*)'", sql)
    assert default is not None and default.group(1) == runs.INITIAL


def test_the_database_takes_every_status_and_refuses_any_other(conn):
    for i, status in enumerate(RunStatus):
        conn.execute("INSERT INTO etl_runs (run_id, run_timestamp, status) VALUES (?, 't', ?)", (f"r{i}", status))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO etl_runs (run_id, run_timestamp, status) VALUES ('bad', 't', 'paused')")


def test_transitions_name_every_status_and_final_ones_lead_nowhere_by_themselves():
    assert set(TRANSITIONS) == set(RunStatus)
    assert TRANSITIONS[S.SUCCEEDED] == frozenset()
    assert FINAL <= AT_REST and S.UPLOAD_PENDING in AT_REST and not runs.IN_FLIGHT & AT_REST
    assert runs.can_move("loaded", "loaded")  # a repeated event leaves a run where it is
    assert runs.check_transition(S.LOADED, "upload_pending") == S.UPLOAD_PENDING
    with pytest.raises(BadTransition, match="from succeeded to running"):
        runs.check_transition(S.SUCCEEDED, S.RUNNING)
    with pytest.raises(BadTransition, match="from loaded to extracted"):
        runs.check_transition("loaded", "extracted")


def test_events_keep_their_wire_format():
    """Byte for byte the objects the services published before the contract had a home (old entries still parse)."""
    names = {"raw_file": "a.jsonl", "processed_file": "b.jsonl", "dlq_file": "c.jsonl"}
    cases = [
        (
            runs.run_started("r1", "20261125_030000", "schedule", "2026-11-25T03:00:00.000Z", names),
            b'{"type":"run_started","run_id":"r1","run_ts":"20261125_030000","trigger":"schedule",'
            b'"started_at":"2026-11-25T03:00:00.000Z","raw_file":"a.jsonl","processed_file":"b.jsonl",'
            b'"dlq_file":"c.jsonl"}',
        ),
        (runs.run_resumed("r1", "api"), b'{"type":"run_resumed","run_id":"r1","trigger":"api"}'),
        (
            runs.run_warning("r1", "20261125_030000", "w"),
            b'{"type":"run_warning","run_id":"r1","run_ts":"20261125_030000","warning":"w"}',
        ),
        (
            runs.phase1_complete("r1", "20261125_030000", "a.jsonl", 208, 3, 208),
            b'{"type":"phase1_complete","run_id":"r1","raw_file":"a.jsonl","records":208,"pages":3,"total":208,'
            b'"run_ts":"20261125_030000"}',
        ),
        (runs.extract_failed("r1", "e"), b'{"type":"extract_failed","run_id":"r1","error":"e"}'),
        (runs.run_failed("r1", "e"), b'{"type":"run_failed","run_id":"r1","error":"e"}'),
        (
            runs.run_failed("r1", "e", stage="transform"),
            b'{"type":"run_failed","run_id":"r1","stage":"transform","error":"e"}',
        ),
        (
            runs.run_error("r1", "e", stage="transform"),
            b'{"type":"run_error","run_id":"r1","stage":"transform","error":"e"}',
        ),
        (
            runs.run_replayed("r1", "ops", "2026-11-25T03:00:00.000Z"),
            b'{"type":"run_replayed","run_id":"r1","actor":"ops","at":"2026-11-25T03:00:00.000Z"}',
        ),
        (
            runs.phase3_complete("r1", ["a.jsonl"]),
            b'{"type":"phase3_complete","run_id":"r1","status":"succeeded","files":["a.jsonl"]}',
        ),
    ]
    for event, wire in cases:
        assert orjson.dumps(event.as_dict()) == wire
        assert runs.parse_event(orjson.loads(wire)) == event  # read back as it was made


def test_every_event_type_has_a_constructor_or_an_owner():
    made = {
        runs.run_started("r", "t", "x", "s", {}).type,
        runs.run_resumed("r", "x").type,
        runs.run_warning("r", "t", "w").type,
        runs.phase1_complete("r", "t", "f", 1, 1, 1).type,
        runs.extract_failed("r", "e").type,
        runs.run_failed("r", "e").type,
        runs.run_error("r", "e", "s").type,
        runs.run_replayed("r", "a", "t").type,
        runs.phase3_complete("r", []).type,
    }
    # phase2_complete is built by the transformer's Lua script, retention_requested by the API's route.
    assert set(EventType) - made == {EventType.PHASE2_COMPLETE, EventType.RETENTION_REQUESTED}
    lua = (ROOT / "services/transformer/worker.py").read_text()
    assert f"payload['type'] = '{EventType.PHASE2_COMPLETE}'" in lua


def test_an_unknown_event_type_is_not_parsed():
    assert runs.parse_event({"type": "phase9_complete", "run_id": "r1"}) is None
    assert runs.parse_event({"run_id": "r1"}) is None


def test_the_api_status_is_the_enum():
    assert get_args(models.Status) == tuple(str(s) for s in RunStatus)


def test_the_console_and_the_cli_wait_for_the_contracts_statuses():
    js = (ROOT / "services/api/console/console.js").read_text()
    final = re.search(r"const FINAL = new Set\(\[([^\]]*)\]\);", js)
    assert final is not None
    assert set(re.findall(r'"([^"]+)"', final.group(1))) == AT_REST
    from etlctl.runs import FINAL as CLI_FINAL  # a client of the API: its own copy, tied here

    assert set(CLI_FINAL) == FINAL


def _typed(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    skip = {*runs.ROW_COLUMNS, runs.INSERTED_AT, "record", "raw_line"}
    return [(r["name"], r["type"]) for r in conn.execute(f"PRAGMA table_info({table})") if r["name"] not in skip]


@pytest.mark.parametrize("table", ["raw_users", "processed_users", "invalid_users"])
def test_the_user_tables_have_the_user_columns(conn, table):
    """The migrated tables' typed columns are the contract's, in order, with their SQL types."""
    assert _typed(conn, table) == [(c.name, c.sql_type) for c in runs.user_columns(table)]


@pytest.mark.parametrize(
    ("table", "insert"),
    [
        ("raw_users", userrows._INSERT_RAW),
        ("processed_users", userrows._INSERT_VALID),
        ("invalid_users", userrows._INSERT_INVALID),
    ],
)
def test_the_saver_inserts_the_user_columns(table, insert):
    named = re.search(r"INTO (\w+) \(([^)]*)\)", insert)
    assert named is not None and named.group(1) == table
    columns = [c.strip() for c in named.group(2).split(",")]
    skip = {*runs.ROW_COLUMNS, runs.INSERTED_AT, "record", "raw_line"}
    assert [c for c in columns if c not in skip] == [c.name for c in runs.user_columns(table)]


def test_the_api_shows_the_user_columns():
    exposed = [c.name for c in runs.USER_COLUMNS if c.api]
    fields = list(models.Record.model_fields)
    assert fields == [
        "id",
        "run_id",
        *[c.name for c in runs.common_columns()],
        "inserted_at",
        *[n for n in exposed if n not in {c.name for c in runs.common_columns()}],
        "record",
    ]
    for table in ("raw_users", "processed_users", "invalid_users"):
        shown = [c.name for c in runs.user_columns(table) if c.api]
        assert records.TABLES[table].columns == ("id", "run_id", *shown, "inserted_at")


def test_the_sql_console_allows_typed_columns_only(conn):
    for table in ("raw_users", "processed_users", "invalid_users"):
        allowed = sqlconsole.ALLOWED[table]
        assert {n for n, _ in _typed(conn, table)} <= allowed
        assert not allowed & {"record", "raw_line"}
