"""Pages of raw, processed and invalid records: filters, search, sorting and a cached total."""

import bisect
from dataclasses import dataclass
from typing import Any

import orjson

from api.db import Database
from etl_common.db import SQLITE, Dialect

_COMMON = ("id", "run_id", "user_id", "first_name", "last_name", "email", "username", "age", "gender", "department")


@dataclass(frozen=True)
class Table:
    """What the API shows of one detail table: typed columns, sortable columns, extra filters."""

    name: str
    columns: tuple[str, ...]
    sortable: tuple[str, ...]
    has_code: bool = False
    ledger_count: str = ""  # the loaded_pages column counting this table's rows of a page
    records_from: str = ""  # the relation giving each row's stored JSON, when not the table (a view)

    @property
    def with_records(self) -> str:
        """Where a page of rows with their ``record`` is read from."""
        return self.records_from or self.name


TABLES = {
    "raw_users": Table("raw_users", (*_COMMON, "inserted_at"), ("source", "id", *_COMMON[2:]), False, "raw_count"),
    "processed_users": Table(
        "processed_users",
        (*_COMMON, "department_code", "title", "role", "city", "state", "user_agent", "inserted_at"),
        ("source", "id", *_COMMON[2:], "department_code", "title", "role", "city", "state"),
        True,
        "valid_count",
        "processed_records",  # the raw row's record with department_code spliced in (migration 0008)
    ),
    "invalid_users": Table(
        "invalid_users",
        (*_COMMON, "error_reason", "inserted_at"),
        ("source", "id", *_COMMON[2:]),
        False,
        "invalid_count",
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


def _where(table: Table, query: Query, dialect: Dialect) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if query.run_id is not None:
        clauses.append("run_id = ?")
        args.append(query.run_id)
    if query.department is not None:
        clauses.append(dialect.nocase_equal.format(column="department"))
        args.append(query.department)
    if query.department_code is not None and table.has_code:
        clauses.append("department_code = ?")
        args.append(query.department_code.upper())
    if query.q:
        # A substring search, with LIKE's wildcards in the text taken literally.
        pattern = "%" + query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(" + " OR ".join(f"{c} {dialect.like} ? ESCAPE '\\'" for c in _SEARCHED) + ")")
        args.extend([pattern] * len(_SEARCHED))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def page(db: Database, table: Table, query: Query, version: int) -> dict[str, Any]:
    """One page of records and the total matching; the total is cached per data version."""
    where, args = _where(table, query, db.dialect)
    total = db.cached(
        ("count", table.name, where, tuple(args)),
        version,
        lambda: db.scalar(f"SELECT count(*) FROM {table.name} {where}", args),
    )
    order = _order(query, db.dialect)
    start = _ledger_start(db, table, query, version)
    if start is not None:
        # Jump to the right source page through the page ledger instead of skipping rows one by one.
        where, args, offset = where + " AND page >= ?", [*args, start[0]], start[1]
    else:
        offset = query.offset  # SQLite skips these on the index alone (deferred seek)
    cols, rows = db.rows(
        f"SELECT {', '.join(table.columns)}, record FROM {table.with_records} {where} "
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        [*args, query.limit, offset],
    )
    items = []
    for row in rows:
        item = dict(zip(cols, row, strict=True))
        record = item.pop("record")
        # The stored JSON (already masked, without password) is passed through unparsed.
        item["record"] = orjson.Fragment(record) if record is not None else None
        items.append(item)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


def _order(query: Query, dialect: Dialect) -> str:
    direction = "DESC" if query.descending else "ASC"
    # Source order (run, page, position) is unique and served by the (run_id, page, position) index;
    # other sorts break ties on id, so paging is stable either way.
    if query.sort == "source":
        return f"run_id {direction}, page {direction}, position {direction}"
    nulls = dialect.nulls_descending if query.descending else dialect.nulls_ascending  # the same order on both engines
    return f"{query.sort} {direction}{nulls}, id {direction}"


def select(
    table: Table, query: Query, columns: tuple[str, ...], limit: int | None = None, dialect: Dialect = SQLITE
) -> tuple[str, list[Any]]:
    """SQL and arguments of every row of the selection (at most ``limit`` after ``query.offset``), in its order."""
    where, args = _where(table, query, dialect)
    sql = f"SELECT {', '.join(columns)} FROM {table.name} {where} ORDER BY {_order(query, dialect)} LIMIT ? OFFSET ?"
    return sql, [*args, dialect.no_limit if limit is None else limit, query.offset]


def _ledger_start(db: Database, table: Table, query: Query, version: int) -> tuple[int, int] | None:
    """(first source page, rows to skip in it) of a plain, source-ordered page of one run.

    The saver records how many rows of each table every page added, in the same transaction as
    the rows, so the running totals of the ledger locate any offset exactly.
    """
    if query.offset == 0 or query.descending or not is_cheap(query) or query.run_id is None:
        return None
    run_id = query.run_id
    pages, before = db.cached(("ledger", table.name, run_id), version, lambda: _running_totals(db, table, run_id))
    i = bisect.bisect_right(before, query.offset) - 1
    if i < 0:
        return None
    return pages[i], query.offset - before[i]


def _running_totals(db: Database, table: Table, run_id: str | None) -> tuple[list[int], list[int]]:
    _, rows = db.rows(f"SELECT page, {table.ledger_count} FROM loaded_pages WHERE run_id = ? ORDER BY page", (run_id,))
    pages, before, total = [], [], 0
    for page, count in rows:
        if count:
            pages.append(page)
            before.append(total)
            total += count
    return pages, before


def is_cheap(query: Query) -> bool:
    """Served by an index in well under a millisecond: fine to run on the event loop."""
    return not query.q and query.department is None and query.department_code is None and query.sort == "source"
