"""Summaries for the frontend's charts: one pass over a covering index, folded into counts in Python."""

from collections import Counter
from typing import Any

from api.db import Database

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-65")
RUNS_IN_SUMMARY = 30

# One scan of the covering index processed_users_summary (migration 0002) gives every chart.
_GROUPS = """
SELECT department_code, department, gender,
       CASE WHEN age IS NULL THEN NULL WHEN age < 25 THEN 0 WHEN age < 35 THEN 1 WHEN age < 45 THEN 2
            WHEN age < 55 THEN 3 ELSE 4 END AS band,
       user_agent, count(*)
FROM processed_users WHERE run_id = ? GROUP BY 1, 2, 3, 4, 5
"""


def device_type(user_agent: str | None) -> str:
    """desktop, laptop, mobile, tablet or unknown, as well as a user agent can tell.

    A user agent does not say whether a Windows, Linux or macOS computer is a desktop or a
    laptop; only Chromebooks (CrOS) are known laptops, the other computers count as desktop.
    """
    ua = (user_agent or "").lower()
    if not ua:
        return "unknown"
    if "ipad" in ua or "tablet" in ua or "kindle" in ua or "silk/" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if any(k in ua for k in ("mobile", "iphone", "ipod", "android", "windows phone", "blackberry", "opera mini")):
        return "mobile"
    if "cros" in ua:
        return "laptop"
    if any(k in ua for k in ("windows", "macintosh", "mac os x", "linux", "x11")):
        return "desktop"
    return "unknown"


def latest_run_with_data(db: Database) -> str | None:
    """The run_id of the newest run with at least one valid record; None when there is none."""
    run_id: str | None = db.scalar("SELECT run_id FROM etl_runs WHERE valid_count > 0 ORDER BY id DESC LIMIT 1")
    return run_id


def summarise(db: Database, run_id: str | None) -> dict[str, Any]:
    """Counts by department, gender, age band and device for one run, and valid/invalid per run."""
    departments: Counter[tuple[str | None, str | None]] = Counter()  # (code, name)
    genders: Counter[str] = Counter()
    bands: Counter[str] = Counter()
    devices: Counter[str] = Counter()
    total = 0
    if run_id is not None:
        _, rows = db.rows(_GROUPS, (run_id,))
        for code, name, gender, band, ua, n in rows:
            total += n
            departments[(code, name)] += n
            genders[gender or "unknown"] += n
            bands[AGE_BANDS[band] if band is not None else "unknown"] += n
            devices[device_type(ua)] += n
    runs = db.dicts(
        "SELECT id, run_id, run_timestamp, status, valid_count, invalid_count FROM etl_runs ORDER BY id DESC LIMIT ?",
        (RUNS_IN_SUMMARY,),
    )
    return {
        "run_id": run_id,
        "total": total,
        "by_department": [
            {"department": name, "department_code": code, "count": n}
            for (code, name), n in sorted(departments.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ],
        "by_gender": _sorted(genders, "gender"),
        "by_age_band": [{"band": b, "count": bands[b]} for b in (*AGE_BANDS, "unknown") if bands[b]],
        "by_device": _sorted(devices, "device"),
        "runs": runs,
    }


def _sorted(counter: Counter[str], key: str) -> list[dict[str, Any]]:
    return [{key: k, "count": n} for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
