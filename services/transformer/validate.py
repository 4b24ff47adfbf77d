"""The business rules a user must meet; every failed rule is reported in words a person can act on."""

import re
import unicodedata
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from etl_common import jsontext
from etl_common.runs import is_user_id

AGE_MIN, AGE_MAX = 18, 65
# The rules, named by the field each checks; "record" is broken by a record that is not a JSON object.
RULES = ("id", "firstName", "email", "age", "company.department")
NOT_AN_OBJECT = "record"
# The rule a record breaks by holding the NUL character (U+0000) in a text value or a field name: PostgreSQL's text
# cannot hold it, so such a record would be stored on one engine and refused by the other (docs/contracts.md).
NUL = "nul"
NUL_SHOWN = "\\u0000"  # how a reason or a field path spells the character: its JSON escape, never the character
NUL_FIELDS_NAMED = 10  # fields named in a reason; more are counted


class Problem(str):
    """One broken rule: the words a person reads (the string itself) and ``rule``, the field it is about.

    A ``str``, so reasons join and compare as text; ``rule`` lets the saver count failures per rule
    without parsing the words.
    """

    rule: str

    def __new__(cls, rule: str, text: str) -> "Problem":
        problem = super().__new__(cls, text)
        problem.rule = rule
        return problem


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# A dot-atom local part and a plain ASCII host name: the shape of nearly every address. email_validator
# accepts every such local part, so only the host needs its verdict, cached per host (the profiler showed
# email_validator's host checks as 80% of the transformer's time). Anything else takes the full check.
_PLAIN_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9.-]+)")


@lru_cache(maxsize=4096)
def _host_ok(host: str) -> bool:
    try:
        validate_email("a@" + host, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


# An internationalized address (``zoé12@x.com``): email_validator checks its local part character by character,
# treating every ASCII letter alike and every digit alike, so the verdict is that of its shape (``aaé00@x.com``),
# cached, as long as no character can compose with a neighbouring letter under NFC (a combining mark, or a character
# whose canonical decomposition starts with one). The profiler found these at 165 us each, ~11% of generated users.
_UNICODE_EMAIL = re.compile(r"([^\s@\"<>()\[\]\\,;:]+)@([A-Za-z0-9.-]+)")
_SHAPE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "a" * 52 + "0" * 10)


def _composes(char: str) -> bool:
    """Whether ``char`` may combine with the character before it under NFC."""
    if unicodedata.combining(char):
        return True
    parts = unicodedata.decomposition(char).split()
    return bool(parts) and not parts[0].startswith("<") and unicodedata.combining(chr(int(parts[0], 16))) != 0


@lru_cache(maxsize=4096)
def _shape_ok(shape: str) -> bool:
    try:
        validate_email(shape, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def email_problem(email: str) -> str | None:
    """Why ``email`` is not a valid address (email_validator's words), or None when it is."""
    plain = _PLAIN_EMAIL.fullmatch(email)
    if plain is not None and len(email) <= 254 and _host_ok(plain.group(1)):
        return None
    if plain is None and (intl := _UNICODE_EMAIL.fullmatch(email)) is not None:
        local = intl.group(1)
        if not any(_composes(c) for c in local if not c.isascii()) and _shape_ok(
            local.translate(_SHAPE) + "@" + intl.group(2)
        ):
            return None
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def _shape(record: Any) -> str:
    """The type name, or what a string holding JSON holds (a double-encoded record)."""
    if isinstance(record, str) and record.lstrip()[:1] in ("{", "["):
        try:
            value, _ = jsontext.loads_tolerant(record, 64)
        except ValueError:
            return "str"
        kind = "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else None
        if kind:
            return f"a string holding {kind} (double-encoded JSON)"
    return type(record).__name__


def problems(record: Any) -> list[Problem]:
    """Every broken rule of ``record``; empty when the record is valid."""
    if not isinstance(record, dict):
        return [Problem(NOT_AN_OBJECT, f"record: expected a JSON object, got {_shape(record)}")]
    errors: list[Problem] = []

    uid = record.get("id")
    if uid is None:
        errors.append(Problem("id", "id: missing"))
    elif not is_user_id(uid):
        if not _is_int(uid):
            errors.append(Problem("id", f"id: {_show(uid)} is not an integer"))
        else:
            # SQLite (and most consumers) hold signed 64-bit integers: such an id could not be stored or joined.
            errors.append(Problem("id", f"id: {uid} is outside the 64-bit integer range"))

    if (problem := _text_problem("firstName", record.get("firstName"), "is blank")) is not None:
        errors.append(problem)

    email = record.get("email")
    if email is None or email == "":
        errors.append(Problem("email", "email: missing"))
    elif not isinstance(email, str):
        errors.append(Problem("email", f"email: {_show(email)} is not a string"))
    else:
        reason = email_problem(email)
        if reason is not None:
            errors.append(Problem("email", f"email: {_show(email)} is not a valid address ({reason})"))

    age = record.get("age")
    if age is None:
        errors.append(Problem("age", "age: missing"))
    elif not _is_number(age):
        errors.append(Problem("age", f"age: {_show(age)} is not a number"))
    elif age < AGE_MIN:
        errors.append(Problem("age", f"age: {age} is below {AGE_MIN}"))
    elif age > AGE_MAX:
        errors.append(Problem("age", f"age: {age} is above {AGE_MAX}"))

    company = record.get("company")
    dept = company.get("department") if isinstance(company, dict) else None
    if company is not None and not isinstance(company, dict):
        errors.append(Problem("company.department", f"company: {_show(company)} is not an object"))
    elif (problem := _text_problem("company.department", dept, "is empty")) is not None:
        errors.append(problem)
    return errors


def nul_problems(record: dict[str, Any]) -> list[Problem]:
    """A problem per field of ``record`` (nested too) whose text value or name holds U+0000; empty when none does.

    The reason names the field, never its value (it may be a secret).
    """
    found: list[str] = []
    stack: list[tuple[Any, str, bool]] = [(record, "", False)]  # (value, its path, whether its name holds one)
    while stack:
        value, path, bad_name = stack.pop()
        if bad_name:
            found.append(f"{shown(path)}: the field name holds the NUL character U+0000")
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                name = str(key)
                stack.append((item, f"{path}.{name}" if path else name, "\x00" in name))
        elif isinstance(value, list):
            stack.extend((item, path + "[]", False) for item in reversed(value))
        elif isinstance(value, str) and "\x00" in value:
            found.append(f"{shown(path)}: holds the NUL character U+0000")
    named = list(dict.fromkeys(found))
    out = [Problem(NUL, text) for text in named[:NUL_FIELDS_NAMED]]
    if len(named) > NUL_FIELDS_NAMED:
        out.append(Problem(NUL, f"and {len(named) - NUL_FIELDS_NAMED} more fields hold the NUL character U+0000"))
    return out


def shown(text: str) -> str:
    """``text`` with every NUL character spelled as its JSON escape: what a reason or a stored name may hold."""
    return text.replace("\x00", NUL_SHOWN) if "\x00" in text else text


def _text_problem(name: str, value: Any, blank: str) -> Problem | None:
    """Why a required text field fails (missing, not a string, only whitespace: ``blank`` words it), or None."""
    if value is None:
        return Problem(name, f"{name}: missing")
    if not isinstance(value, str):
        return Problem(name, f"{name}: {_show(value)} is not a string")
    if not value.strip():
        return Problem(name, f"{name}: {blank}")
    return None
