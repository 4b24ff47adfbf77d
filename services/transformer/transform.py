"""Turns one raw page into its processed form: masked raw copies, valid enriched records and rejects with reasons."""

from typing import Any

import orjson

from transformer import pii
from transformer.enrich import UNKNOWN, department_code
from transformer.validate import problems


def transform_page(
    records: list[Any], departments: dict[str, str], pii_policy: str = "mask", reject_unknown: bool = False
) -> dict[str, list[Any]]:
    """``{raw, valid, invalid}`` for a page; positions are the records' places in the source page."""
    raw: list[Any] = []
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for pos, record in enumerate(records):
        safe = pii.protect(record, pii_policy)
        raw.append(safe)
        errors = problems(record)
        if not errors:
            code = department_code(departments, record["company"]["department"])
            if code == UNKNOWN and reject_unknown:
                errors.append(f"company.department: {record['company']['department']!r} is not a known department")
            else:
                valid.append({"pos": pos, "record": {**safe, "department_code": code}})
                continue
        if isinstance(record, dict):
            invalid.append({"pos": pos, "record": safe, "raw_line": None, "error_reason": "; ".join(errors)})
        else:
            # Not an object: kept verbatim as text so nothing is lost.
            invalid.append({"pos": pos, "record": None, "raw_line": _text(record), "error_reason": "; ".join(errors)})
    return {"raw": raw, "valid": valid, "invalid": invalid}


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()
