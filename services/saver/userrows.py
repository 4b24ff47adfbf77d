"""A page's users as rows of the three user tables, and as the lines of the run's three files."""

import functools
from typing import TYPE_CHECKING, Any

import orjson

from etl_common.files import file_names
from saver.files import invalid_line

if TYPE_CHECKING:
    from saver.store import Store


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _rules(rules: Any) -> str | None:
    """The transformer's ``rules`` list as the ``failed_rules`` column (``"email,age"``); None when not given."""
    if not isinstance(rules, list):
        return None
    return ",".join(dict.fromkeys(str(r) for r in rules))


def _get(record: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _with_code(record_json: bytes, code: Any) -> bytes:
    """``{...}`` + ``department_code``, spliced into the record's JSON instead of serialising it again."""
    tail = b',"department_code":' + _code_json(code)[0] + b"}"
    return record_json[:-1] + (tail[1:] if record_json == b"{}" else tail)


def _spelled_as_is(code: Any) -> bool:
    """Whether the view ``processed_records`` spells the code as ``_with_code`` does: ``null``, or the text between
    quotes (no character JSON escapes); otherwise the processed row keeps its whole record (migration 0008)."""
    return code is None or (isinstance(code, str) and _code_json(code)[1])


def _code_json(code: Any) -> tuple[bytes, bool]:
    """The code as JSON, and whether that is the code between quotes."""
    if isinstance(code, str):
        return _text_code_json(code)
    return orjson.dumps(code), False


@functools.lru_cache(maxsize=1024)
def _text_code_json(code: str) -> tuple[bytes, bool]:
    # A dozen codes for all the users of a run: each is written once, not once per user.
    text = orjson.dumps(code)
    return text, text == b'"' + code.encode() + b'"'


def _dlq_line(record_json: bytes, reason: str) -> bytes:
    """``files.invalid_line`` of a record just serialised by orjson: its ``error_reason`` spliced in before the
    closing brace (orjson writes a dict's members in order, so that is where ``obj[key] = reason`` puts it), instead
    of reading the record back; any record that may hold the key already goes the long way."""
    if record_json[:1] != b"{" or record_json == b"{}" or b'"error_reason":' in record_json:
        return invalid_line((record_json.decode(), None, reason))
    return record_json[:-1] + b',"error_reason":' + orjson.dumps(reason) + b"}"


# user_id, first_name, last_name, email, username, age, gender, department
_Common = tuple[int | None, str | None, str | None, str | None, str | None, float | None, str | None, str | None]


def _common(record: Any) -> _Common:
    """The eight columns every user table shares (``_COMMON_COLS``); None where the record has no value of the
    column's JSON type. Runs for every row the saver writes, hence the inlined checks."""
    if not isinstance(record, dict):
        return (None,) * 8
    g, company = record.get, record.get("company")
    uid, first, last, email, user, age, gender = (
        g("id"),
        g("firstName"),
        g("lastName"),
        g("email"),
        g("username"),
        g("age"),
        g("gender"),
    )
    dept = company.get("department") if isinstance(company, dict) else None
    return (
        uid if type(uid) is int and abs(uid) < 2**63 else None,
        first if isinstance(first, str) else None,
        last if isinstance(last, str) else None,
        email if isinstance(email, str) else None,
        user if isinstance(user, str) else None,
        float(age) if isinstance(age, (int, float)) and not isinstance(age, bool) and abs(age) < 1e300 else None,
        gender if isinstance(gender, str) else None,
        dept if isinstance(dept, str) else None,
    )


def _storable(row: tuple[Any, ...]) -> Any:
    """``row`` with every text holding U+0000 as NULL: PostgreSQL's text cannot hold the character, and a typed
    column must read the same on both engines (the record's JSON keeps the value, escaped)."""
    return tuple(None if type(v) is str and "\x00" in v else v for v in row)


_COMMON_COLS = "user_id, first_name, last_name, email, username, age, gender, department"
_INSERT_RAW = (
    f"INSERT INTO raw_users (run_id, page, position, {_COMMON_COLS}, inserted_at, record) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_VALID = (
    f"INSERT INTO processed_users (run_id, page, position, {_COMMON_COLS}, department_code, title, role, "
    "city, state, user_agent, inserted_at, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_INVALID = (
    f"INSERT INTO invalid_users (run_id, page, position, {_COMMON_COLS}, error_reason, failed_rules, "
    "raw_line, inserted_at, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)


def load_page(self: "Store", p: dict[str, Any]) -> bool:
    """Load one page's users into the three tables and the ledger (``Store.load_pages``); False when loaded before."""
    from saver.store import STALLED, now_iso  # here: saver.store imports this module

    run_id, page, at = str(p["run_id"]), int(p["page"]), now_iso()
    raw, valid, invalid = p["raw"], p["valid"], p["invalid"]
    self._ensure_run(run_id, str(p["run_ts"]))
    cur = self.conn.execute(
        "INSERT INTO loaded_pages (run_id, page, raw_count, valid_count, invalid_count, loaded_at) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        (run_id, page, len(raw), len(valid), len(invalid), at),
    )
    if cur.rowcount == 0:
        return False
    # Each record is serialised once and stored once, in raw_users: the processed row refers to it by (run_id,
    # page, position) and the view processed_records splices its department_code in (migration 0008). Only a code
    # the view cannot spell (or a position it cannot find) keeps the whole processed record on the row.
    raw_json = [orjson.dumps(r) for r in raw]
    # JSON spells U+0000 only as this escape: only a record whose text holds it has a text to look into (the
    # transformer makes such a record invalid, rule ``nul``; its raw and invalid rows still carry typed columns).
    nul = [b"\\u0000" in j for j in raw_json]
    common = [_storable(_common(r)) if n else _common(r) for r, n in zip(raw, nul, strict=True)]
    self.conn.executemany(
        _INSERT_RAW, [(run_id, page, pos, *common[pos], at, raw_json[pos].decode()) for pos in range(len(raw))]
    )
    codes = [(int(v["pos"]), v["department_code"]) for v in valid]
    valid_rows = [
        (
            run_id,
            page,
            pos,
            *common[pos],
            _str(code),
            _str(_get(r, "company", "title")),
            _str(r.get("role")),
            _str(_get(r, "address", "city")),
            _str(_get(r, "address", "state")),
            _str(r.get("userAgent")),
            at,
            None if pos >= 0 and _spelled_as_is(code) else _with_code(raw_json[pos], code).decode(),
        )
        for pos, code in codes
        for r in [raw[pos]]
    ]
    self.conn.executemany(_INSERT_VALID, valid_rows)
    invalid_rows = [
        (
            run_id,
            page,
            pos,
            *common[pos],
            str(i["error_reason"]),
            _rules(i.get("rules")),
            i.get("raw_line"),
            at,
            raw_json[pos].decode() if isinstance(raw[pos], dict) else None,
        )
        for i in invalid
        for pos in [int(i["pos"])]
    ]
    self.conn.executemany(_INSERT_INVALID, invalid_rows)
    self.conn.execute(
        "UPDATE etl_runs SET raw_count=raw_count+?, valid_count=valid_count+?, invalid_count=invalid_count+?, "
        "updated_at=? WHERE run_id=?",
        (len(raw), len(valid), len(invalid), at, run_id),
    )
    # Progress after the watchdog's verdict of no progress wins as progress before it would have (a stage came
    # back): a run whose pages were all announced goes on; its files are written again from the tables.
    self.conn.execute(
        "UPDATE etl_runs SET status='extracted', error=NULL WHERE run_id=? AND status='failed' "
        "AND pages_expected IS NOT NULL AND substr(error, 1, ?)=?",
        (run_id, len(STALLED), STALLED),
    )
    if self.loading:
        self.loading.append(
            self.conn,
            run_id,
            file_names(str(p["run_ts"])),
            page,
            _page_lines(raw_json, [(pos, _with_code(raw_json[pos], code)) for pos, code in codes], invalid_rows),
        )
    return True


def _page_lines(
    raw_json: list[bytes], processed: list[tuple[int, bytes]], invalid_rows: list[tuple[Any, ...]]
) -> dict[str, tuple[bytes, int]]:
    """The page's part of the three files, as ``write_run_files`` makes them from the rows just inserted: kind ->
    (its lines, each ending in a new line; how many).

    ``processed`` is (position, processed record JSON); invalid rows are (run_id, page, position, ..., record)
    tuples. In position order, the first of a position only (``ON CONFLICT DO NOTHING`` keeps that one), so the lines
    equal the tables' rows.
    """

    def first_by_position(rows: list[tuple[Any, ...]], at: int) -> list[tuple[Any, ...]]:
        seen: dict[int, tuple[Any, ...]] = {}
        for row in rows:
            seen.setdefault(row[at], row)
        return [seen[pos] for pos in sorted(seen)]

    def joined(lines: list[bytes]) -> tuple[bytes, int]:
        return (b"\n".join(lines) + b"\n" if lines else b""), len(lines)

    # invalid_users rows end with (error_reason, rules, raw_line, inserted_at, record).
    dlq = [
        _dlq_line(raw_json[row[2]], row[-5]) if row[-1] is not None else invalid_line((None, row[-3], row[-5]))
        for row in first_by_position(invalid_rows, 2)
    ]
    return {
        "raw": joined(raw_json),
        "processed": joined([line for _, line in first_by_position(processed, 0)]),
        "dlq": joined(dlq),
    }
