"""Retention's policy: a bound per kind of data, and which runs lose which kind now (the runs always kept aside)."""

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from etl_common.runs import FINAL, RunStatus
from saver.settings import SaverSettings

KINDS = ("rows", "files", "remote", "dead_letters", "headers")


@dataclass(frozen=True)
class Bound:
    """Keep ``days`` days and the newest ``runs`` runs; 0 is no bound."""

    days: int = 0
    runs: int = 0

    def expired(self, position: int, started: datetime, now: datetime) -> bool:
        """Whether the run ``position`` places from the newest (0), started at ``started``, is outside the bound."""
        too_old = self.days > 0 and started < now - timedelta(days=self.days)
        too_far = self.runs > 0 and position >= self.runs
        return too_old or too_far


@dataclass(frozen=True)
class Policy:
    """A bound per kind of data (``KINDS``)."""

    bounds: dict[str, Bound]

    @classmethod
    def of(cls, s: SaverSettings) -> "Policy":
        """The policy of the saver's settings."""
        return cls(
            {
                "rows": Bound(s.retention_rows_days, s.retention_rows_runs),
                "files": Bound(s.retention_files_days, s.retention_files_runs),
                "remote": Bound(s.retention_remote_days, s.retention_remote_runs),
                "dead_letters": Bound(s.retention_dead_letters_days, s.retention_dead_letters_runs),
                "headers": Bound(s.retention_headers_days, s.retention_headers_runs),
            }
        )

    def active(self) -> bool:
        """Whether any bound is set."""
        return any(b.days or b.runs for b in self.bounds.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        """The bounds as JSON."""
        return {k: {"days": b.days, "runs": b.runs} for k, b in self.bounds.items()}


def _moment(iso: str | None) -> datetime:
    if not iso:
        return datetime.now(timezone.utc)
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def plan(conn: sqlite3.Connection, policy: Policy, now: datetime) -> dict[str, Any]:
    """kind -> the run ids that lose it now (a header expiry implies every kind), and the protected runs."""
    runs = conn.execute("SELECT run_id, status, run_timestamp FROM etl_runs ORDER BY id DESC").fetchall()
    latest_ok = next((r["run_id"] for r in runs if r["status"] == RunStatus.SUCCEEDED), None)
    protected = [r["run_id"] for r in runs if r["status"] not in FINAL or r["run_id"] == latest_ok]
    chosen: dict[str, list[str]] = {k: [] for k in KINDS}
    for position, run in enumerate(runs):
        if run["run_id"] in protected:
            continue
        started = _moment(run["run_timestamp"])
        expired = {k for k in KINDS if policy.bounds[k].expired(position, started, now)}
        if "headers" in expired:
            expired = set(KINDS)
        for kind in KINDS:
            if kind in expired:
                chosen[kind].append(run["run_id"])
    return {"runs": chosen, "protected": protected}
