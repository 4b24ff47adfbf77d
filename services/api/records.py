"""Pages of raw, processed and invalid records: filters, search, sorting and a cached total."""

from dataclasses import dataclass
from typing import Any

import orjson

from api.db import Database

_COMMON = ("id", "run_id", "user_id", "first_name", "last_name", "email", "username", "age", "gender",
           "department")


@dataclass(frozen=True)
class Table:
    """What the API shows of one detail table: typed columns, sortable columns, extra filters."""

    name: str
    columns: tuple[str, ...]
    sortable: tuple[str, ...]
    has_code: bool = False


TABLES = {
    "raw_users": Table("raw_users", (*_COMMON, "inserted_at"), ("source", "id", *_COMMON[2:])),
    "processed_users": Table(
        "processed_users",
        (*_COMMON, "department_code", "title", "role", "city", "state", "user_agent", "inserted_at"),
        ("source", "id", *_COMMON[2:], "department_code", "title", "role", "city", "state"), has_code=True,
    ),
    "invalid_users": Table(
        "invalid_users", (*_COMMON, "error_reason", "inserted_at"), ("source", "id", *_COMMON[2:])
    ),
}
_SEARCHED = ("first_name", "last_name", "email", "username")


@dataclass(frozen=True)
class Query:
    """The validated request: every name in it comes from the allow-lists above, values are bound."""

    run_id: str | None = None
    q: str | None = None
    department: str | None = None
    department_code: str | None = None
    sort: str = "source"
    descending: bool = False
    limit: int = 50
    offset: int = 0


def _where(table: Table, query: Query) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if query.run_id is not None:
        clauses.append("run_id = ?")
        args.append(query.run_id)
    if query.department is not None:
        clauses.append("department = ? COLLATE NOCASE")
        args.append(query.department)
    if query.department_code is not None and table.has_code:
        clauses.append("department_code = ?")
        args.append(query.department_code.upper())
    if query.q:
        # A substring search, with LIKE's wildcards in the text taken literally.
        pattern = "%" + query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in _SEARCHED) + ")")
        args.extend([pattern] * len(_SEARCHED))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def page(db: Database, table: Table, query: Query, version: int) -> dict[str, Any]:
    """One page of records and the total matching; the total is cached per data version."""
    where, args = _where(table, query)
    total = db.cached(("count", table.name, where, tuple(args)), version,
                      lambda: db.scalar(f"SELECT count(*) FROM {table.name} {where}", args))
    direction = "DESC" if query.descending else "ASC"
    # Source order (run, page, position) is unique and served by the (run_id, page, position) index;
    # other sorts break ties on id, so paging is stable either way.
    if query.sort == "source":
        order = f"run_id {direction}, page {direction}, position {direction}"
    else:
        order = f"{query.sort} {direction}, id {direction}"
    # SQLite skips OFFSET rows on the index alone (deferred seek), so the records are read only for
    # the page itself.
    cols, rows = db.rows(
        f"SELECT {', '.join(table.columns)}, record FROM {table.name} {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*args, query.limit, query.offset],
    )
    items = []
    for row in rows:
        item = dict(zip(cols, row, strict=True))
        record = item.pop("record")
        # The stored JSON (already masked, without password) is passed through unparsed.
        item["record"] = orjson.Fragment(record) if record is not None else None
        items.append(item)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


def is_cheap(query: Query) -> bool:
    """Served by an index in well under a millisecond: fine to run on the event loop."""
    return not query.q and query.department is None and query.department_code is None and query.sort == "source"
