"""Runs: the header table the frontend's drop-down is built from."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import AuthDep, DbDep

router = APIRouter(tags=["runs"], dependencies=[AuthDep])

Status = Literal["running", "extracted", "transformed", "loaded", "upload_pending", "succeeded", "failed"]

_COLUMNS = (
    "id, run_id, run_timestamp, raw_file, processed_file, dlq_file, valid_count, invalid_count, status, "
    "trigger, started_at, finished_at, total_expected, raw_count, error"
)


@router.get("/etl_runs", summary="Runs, newest first")
def list_runs(
    db: DbDep,
    response: Response,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict]:
    where, args = ("WHERE status = ?", [status]) if status else ("", [])
    total = db.execute(f"SELECT count(*) FROM etl_runs {where}", args).fetchone()[0]
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM etl_runs {where} ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset]
    ).fetchall()
    response.headers["X-Total-Count"] = str(total)
    runs = [dict(r) for r in rows]
    files = _files(db, [r["run_id"] for r in runs])
    for r in runs:
        r["files"] = files.get(r["run_id"], [])
    return runs


def _files(db, run_ids: list[str]) -> dict[str, list[dict]]:
    if not run_ids:
        return {}
    marks = ",".join("?" * len(run_ids))
    out: dict[str, list[dict]] = {}
    for f in db.execute(
        f"SELECT run_id, kind, name, bytes, sha256, records, encrypted, remote_path, uploaded_at "
        f"FROM uploaded_files WHERE run_id IN ({marks}) ORDER BY kind",
        run_ids,
    ):
        d = dict(f)
        out.setdefault(d.pop("run_id"), []).append(d)
    return out
