"""Turns one raw page into its processed form: masked raw copies, valid enriched records and rejects with reasons."""

from typing import Any

import orjson

from etl_common import pii
from etl_common.jsontext import QUARANTINE, quarantined
from transformer.contract import Contract, PageSchema
from transformer.enrich import UNKNOWN, department_code
from transformer.validate import NOT_AN_OBJECT, Problem, nul_problems, problems, shown


def transform_page(
    records: list[Any],
    departments: dict[str, str],
    pii_policy: str = "mask",
    reject_unknown: bool = False,
    contract: Contract | None = None,
    protected: bool = False,
    may_hold_nul: bool | None = None,
) -> dict[str, Any]:
    """``{raw, valid, invalid}`` for a page; positions are the records' places in the source page.

    ``protected``: the records already went through ``pii_policy`` (the extractor's page carries its mark,
    ``pii.MARK``), so they are handed on as they are instead of being protected a second time.

    ``raw`` holds every record once (protected); ``valid`` and ``invalid`` refer to it by position,
    so a page crosses Redis with each record once: ``valid`` adds the department code, ``invalid``
    the reason, the names of the broken rules (``rules``, each once, e.g. ``["email", "age"]``) and
    the text of a record that is not an object; ``schema`` is the page's observed schema and contract
    violations (``transformer.contract``).

    ``may_hold_nul``: whether the page's JSON text holds ``\\u0000`` (None: found out here); only then are its
    records searched for U+0000 (the search costs ~45% of a page's transform, the byte search ~1.5%).
    No text handed on (a reason, a quarantined record's text, a field path) holds U+0000: the stores hold the
    same text (docs/contracts.md, rule ``nul``).
    """
    page_schema = PageSchema(contract)
    if may_hold_nul is None:
        may_hold_nul = _may_hold_nul(records)
    raw: list[Any] = []
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for pos, record in enumerate(records):
        if quarantined(record):
            # The extractor could not hand it on as values: its masked text is the raw copy and the invalid line.
            reason, text = shown(str(record[QUARANTINE].get("reason"))), record[QUARANTINE].get("text")
            if protected:
                masked = text if isinstance(text, str) else None
            else:
                masked = pii.protect_text(text, pii_policy) if isinstance(text, str) else None
            # JSON text escapes U+0000; only a cut-out deep container keeps the source's raw text (jsontext.cut_deep).
            masked = shown(masked) if masked is not None else None
            if masked is None:
                reason += "; its text is withheld because it could not be masked"
            raw.append(masked)
            invalid.append({"pos": pos, "raw_line": masked, "error_reason": reason, "rules": [NOT_AN_OBJECT]})
            continue
        record, broken = page_schema.take(record)
        safe = record if protected else pii.protect(record, pii_policy)
        raw.append(safe)
        errors = problems(record) + broken
        if may_hold_nul and isinstance(record, dict):
            errors += nul_problems(record)
        if not errors:
            code = department_code(departments, record["company"]["department"])
            if code == UNKNOWN and reject_unknown:
                errors.append(
                    Problem(
                        "company.department",
                        f"company.department: {record['company']['department']!r} is not a known department",
                    )
                )
            else:
                valid.append({"pos": pos, "department_code": code})
                continue
        # Not an object: also kept as text (masked like every copy), so nothing is lost.
        raw_line = None if isinstance(record, dict) else _text(safe)
        rules = list(dict.fromkeys(e.rule for e in errors))
        # A contract's field path or email_validator's words may quote U+0000: spelled as its escape.
        reason = shown("; ".join(errors))
        invalid.append({"pos": pos, "raw_line": raw_line, "error_reason": reason, "rules": rules})
    return {"raw": raw, "valid": valid, "invalid": invalid, "schema": page_schema.summary()}


def _may_hold_nul(records: list[Any]) -> bool:
    """Whether the records' JSON text holds ``\\u0000``, the only way JSON spells U+0000 (True when not writable)."""
    try:
        return b"\\u0000" in orjson.dumps(records)
    except orjson.JSONEncodeError:
        return True


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()
