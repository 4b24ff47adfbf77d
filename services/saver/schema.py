"""A run's observed schema, merged from its pages' summaries, and its drift against the previous succeeded run.

The transformer summarises each page (``transformer.contract.PageSchema``); the saver keeps the
summaries of a run's pages (``page_schemas``, idempotent per page) and, once the run is loaded,
merges them into ``run_schema`` with the drift: fields added, removed, of a changed type, or whose
null-or-missing share rose by more than ``ETL_DRIFT_NULL_RATE_JUMP``. Each change is also a line of
the run's ``warnings``.
"""

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from etl_common.clock import utc_iso
from etl_common.runs import RunStatus
from saver.runevents import add_warning

MAX_WARNINGS = 20  # drift lines added to a run's warnings; the rest are counted in one more line
_NUMBERS = {"integer", "number"}  # an integer where numbers were (or back) is not a change of type


def save_pages(conn: sqlite3.Connection, pages: Iterable[dict[str, Any]]) -> None:
    """Keep the pages' schema summaries (a page already kept is left as it is), in one transaction."""
    rows = [
        (str(p["run_id"]), int(p["page"]), orjson.dumps(p["schema"]).decode())
        for p in pages
        if isinstance(p.get("schema"), dict)
    ]
    if not rows:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT INTO page_schemas (run_id, page, summary) VALUES (?,?,?) ON CONFLICT DO NOTHING", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def merge(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The run's schema from its pages' summaries: per field its types, nulls, missing and null-or-missing share."""
    records, pages = 0, 0
    fields: dict[str, dict[str, Any]] = {}
    contract: dict[str, Any] | None = None
    for s in summaries:
        pages += 1
        records += int(s.get("records", 0))
        for path, f in s.get("fields", {}).items():
            into = fields.setdefault(path, {"present": 0, "types": {}})
            into["present"] += int(f["present"])
            for kind, n in f["types"].items():
                into["types"][kind] = into["types"].get(kind, 0) + int(n)
        if isinstance(c := s.get("contract"), dict):
            if contract is None:
                contract = {"name": c["name"], "policy": c["policy"], "records": 0, "discarded": 0, "violations": {}}
            contract["records"] += int(c["records"])
            contract["discarded"] += int(c.get("discarded", 0))
            for path, v in c["violations"].items():
                into = contract["violations"].setdefault(path, {"expected": v["expected"], "got": {}})
                for kind, n in v["got"].items():
                    into["got"][kind] = into["got"].get(kind, 0) + int(n)
    for f in fields.values():
        f["nulls"] = f["types"].get("null", 0)
        f["missing"] = max(records - f["present"], 0)
        f["null_rate"] = round((f["nulls"] + f["missing"]) / records, 6) if records else 0.0
    ordered = dict(sorted(fields.items()))
    return {"records": records, "pages": pages, "fields": ordered, "contract": contract}


def _types(field: dict[str, Any]) -> set[str]:
    """The field's JSON types other than null."""
    return {k for k, n in field["types"].items() if n and k != "null"}


def _compared(kinds: set[str]) -> set[str]:
    """Types as compared between runs: integers and numbers are one kind (an integral float is an integer)."""
    return {"number"} if kinds and kinds <= _NUMBERS else kinds


def _covered(path: str, parents: set[str]) -> bool:
    """Whether ``path`` lies under one of ``parents`` (a removed object's fields go with it)."""
    return any(path.startswith(p + ".") or path.startswith(p + "[]") for p in parents)


def drift(now: dict[str, Any], before: dict[str, Any], null_rate_jump: float) -> list[dict[str, Any]]:
    """The changes from ``before`` to ``now`` (merged schemas): ``{change, field, before, after}`` each."""
    if not now["records"] or not before["records"]:
        return []  # nothing observed on one side (a run of no users): no field can be said to have changed
    new, old = now["fields"], before["fields"]
    changes: list[dict[str, Any]] = []
    added = {p for p in new if p not in old and new[p]["present"]}
    removed = {p for p in old if old[p]["present"] and not new.get(p, {}).get("present")}
    for path in sorted(added):
        if not _covered(path, added):
            changes.append({"change": "added", "field": path, "before": None, "after": sorted(_types(new[path]))})
    for path in sorted(removed):
        if not _covered(path, removed):
            changes.append({"change": "removed", "field": path, "before": sorted(_types(old[path])), "after": None})
    for path in sorted(set(new) & set(old) - added - removed):
        was, is_ = _types(old[path]), _types(new[path])
        if was and is_ and _compared(was) != _compared(is_):
            changes.append({"change": "type_changed", "field": path, "before": sorted(was), "after": sorted(is_)})
        if new[path]["null_rate"] - old[path]["null_rate"] > null_rate_jump:
            changes.append(
                {
                    "change": "null_rate",
                    "field": path,
                    "before": old[path]["null_rate"],
                    "after": new[path]["null_rate"],
                }
            )
    return changes


def words(change: dict[str, Any], previous_run: str) -> str:
    """One drift change as a line of the run's warnings."""
    field, kind = change["field"], change["change"]
    lead = f"schema drift against run {previous_run}:"
    if kind == "added":
        return f"{lead} field added: {field} ({' or '.join(change['after'])})"
    if kind == "removed":
        return f"{lead} field removed: {field}"
    if kind == "type_changed":
        return f"{lead} {field} changed type from {' or '.join(change['before'])} to {' or '.join(change['after'])}"
    return f"{lead} {field} is null or missing in {change['after']:.0%} of the users (was {change['before']:.0%})"


def contract_words(contract: dict[str, Any] | None) -> str | None:
    """The run's contract violations as one warning line; None when every record kept to the contract."""
    if not contract or not contract["records"]:
        return None
    outcome = {"evolve": "loaded as they are", "freeze": "made invalid", "discard_value": "values dropped"}
    parts = []
    for path, v in sorted(contract["violations"].items()):
        got = ", ".join(f"{kind} x{n}" for kind, n in sorted(v["got"].items()))
        parts.append(f"{path} ({got}; expected {v['expected']})")
    shown = "; ".join(parts[:10]) + (f"; and {len(parts) - 10} more fields" if len(parts) > 10 else "")
    return (
        f"contract {contract['name']}: {contract['records']} records broke it, "
        f"{outcome.get(contract['policy'], contract['policy'])} (policy {contract['policy']}): {shown}"
    )


def finish(conn: sqlite3.Connection, run_id: str, null_rate_jump: float) -> list[dict[str, Any]] | None:
    """Merge the run's schema, compare it with the previous succeeded run's and record both, with the warnings.

    One transaction; returns the drift changes, or None when the run's schema was already recorded.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM run_schema WHERE run_id=?", (run_id,)).fetchone():
            conn.execute("ROLLBACK")
            return None
        rows = conn.execute("SELECT summary FROM page_schemas WHERE run_id=? ORDER BY page", (run_id,))
        now = merge(orjson.loads(r[0]) for r in rows)
        prev = conn.execute(
            "SELECT s.run_id, s.schema FROM run_schema s JOIN etl_runs r USING (run_id) "
            f"WHERE r.status='{RunStatus.SUCCEEDED}' "
            "AND r.id < (SELECT id FROM etl_runs WHERE run_id=?) ORDER BY r.id DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        changes = drift(now, orjson.loads(prev[1]), null_rate_jump) if prev else []
        at = utc_iso()
        conn.execute(
            "INSERT INTO run_schema (run_id, schema, drift, previous_run_id, computed_at) VALUES (?,?,?,?,?)",
            (run_id, orjson.dumps(now).decode(), orjson.dumps(changes).decode(), prev[0] if prev else None, at),
        )
        lines = [words(c, prev[0]) for c in changes[:MAX_WARNINGS]]
        if len(changes) > MAX_WARNINGS:
            lines.append(f"schema drift: {len(changes) - MAX_WARNINGS} more changes (GET /etl_runs/{{run}}/schema)")
        if (line := contract_words(now["contract"])) is not None:
            lines.append(line)
        for line in lines:
            add_warning(conn, run_id, line, at)
        conn.execute("DELETE FROM page_schemas WHERE run_id=?", (run_id,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return changes
