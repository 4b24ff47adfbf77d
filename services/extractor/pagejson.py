"""Reads a source page: records the pipeline can carry exactly pass as they are, the others are quarantined.

A quarantined record is replaced in the page by ``{QUARANTINE: {"reason": ..., "text": ...}}``: the
reason names the field and the fault, the text is the record's JSON as the source wrote it (ASCII,
numbers exact). The transformer masks the text and sends the record to the invalid records; the run goes on.
"""

from typing import Any

import orjson

from etl_common import jsontext, pii

QUARANTINE = jsontext.QUARANTINE
quarantined = jsontext.quarantined
# Containers a record may nest (the record object is level 1); DummyJSON nests 3. Deeper ones are quarantined.
RECORD_MAX_DEPTH = 64
# orjson writes at most 254 nested containers: wrapping the users list in this many lists makes the
# write fail exactly when a record nests deeper than RECORD_MAX_DEPTH (one C call for a whole page).
_DEPTH_PROBE_WRAPS = 253 - RECORD_MAX_DEPTH
# The same probe around the page object, one level above its users list.
_PAGE_PROBE_WRAPS = _DEPTH_PROBE_WRAPS - 1


# Number tokens orjson may read inexactly (16+ digits, or an exponent) send a page to the exact reader. They
# are found on the page's bytes mapped to number classes ("0" digit or dot, "e", "+" sign, " " anything else)
# with C-speed substring searches: a regex over the page cost 2-5 ms per page.
_CLASSES = bytes(
    ord("0") if chr(b) in "0123456789." else ord("e") if chr(b) in "eE" else ord("+") if chr(b) in "+-" else 32
    for b in range(256)
)
_SUSPECTS = (b"0" * 16, b"0e0", b"0e+0")


def read_page(content: bytes) -> Any:
    """The page's JSON value; every record of its ``users`` list that cannot travel exactly is quarantined.

    ValueError when the bytes are not JSON even to the tolerant reader (the page is then retried).
    """
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    else:
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list):
            if not _inexact_numbers(content):
                return body
        else:
            text = _page_probe(body)
            if text is not None and _written_as(text, content):
                # orjson writes the page back byte for byte: every number is exact, no record is too deep.
                return body
            if not _inexact_numbers(content) and (text is not None or _depth_ok(users)):
                return body
    body, cuts = jsontext.loads_tolerant(content, RECORD_MAX_DEPTH + 2)  # + the page object and its users list
    if isinstance(body, dict) and isinstance(body.get("users"), list):
        body["users"] = [checked(record, cuts) for record in body["users"]]
    return body


def _page_probe(body: dict[str, Any]) -> bytes | None:
    """The page as orjson writes it, inside ``_PAGE_PROBE_WRAPS`` lists; None when a member nests too deep for
    that (one C call: it answers the depth question for every record, and gives the text to compare)."""
    probe: Any = body
    for _ in range(_PAGE_PROBE_WRAPS):
        probe = [probe]
    try:
        return orjson.dumps(probe)
    except orjson.JSONEncodeError:
        return None


def _written_as(probe: bytes, content: bytes) -> bool:
    """Whether the page inside ``probe`` is exactly ``content`` (the source wrote compact JSON as orjson does).

    Such a page needs no look for inexact numbers: each number's text is the one the pipeline will write.
    """
    wraps = _PAGE_PROBE_WRAPS
    return len(probe) == len(content) + 2 * wraps and probe.startswith(content, wraps)


def _inexact_numbers(content: bytes) -> bool:
    """Whether a number token (after ``:``, ``[`` or ``,``) has 16+ digits or an exponent; strings may match too."""
    classes = content.translate(_CLASSES)
    for suspect in _SUSPECTS:
        at = classes.find(suspect)
        while at >= 0:
            # Back to the token's start, then over the white space between it and its delimiter.
            start = classes.rfind(b" ", 0, at) + 1
            while start > 0 and content[start - 1] in b" \t\r\n":
                start -= 1
            if start > 0 and content[start - 1] in b":[,":
                return True
            at = classes.find(suspect, at + len(suspect))
    return False


def _depth_ok(users: list[Any]) -> bool:
    probe: Any = users
    for _ in range(_DEPTH_PROBE_WRAPS):
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError:
        return False
    return True


def checked(record: Any, cuts: list[str]) -> Any:
    """``record`` ready for orjson (plain floats), or its quarantine marker when it holds a value that is not."""
    reason = _problem(record)
    if reason is None:
        return _plain(record)
    return {QUARANTINE: {"reason": reason, "text": jsontext.dumps_exact(record, cuts)}}


def _problem(record: Any) -> str | None:
    """The first value of ``record`` that cannot travel exactly, as ``field: what is wrong``."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(record, ())]
    while stack:
        value, path = stack.pop()
        where = _path(path)
        secret = bool(path) and pii.is_secret(path[-1])  # never shown in a reason
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                if jsontext.BAD_UNICODE.search(key):
                    return f"{where or 'record'}: a field name is not valid Unicode ({_bad_char(key)})"
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, f"[{i}]")) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, jsontext.HugeInt):
            return f"{where or 'record'}: an integer of {len(value)} digits is outside the 64-bit integer range"
        elif isinstance(value, str):
            if value.startswith(jsontext.DEEP_MARK):
                top = path[0] if path and not path[0].startswith("[") else "record"
                return f"{_path((top,))}: nested deeper than {RECORD_MAX_DEPTH} levels"
            if jsontext.BAD_UNICODE.search(value):
                return f"{where or 'record'}: not valid Unicode ({_bad_char(value)})"
        elif isinstance(value, jsontext.Number):
            shown = "the value" if secret else value.text[:40]
            if value.text in ("NaN", "Infinity", "-Infinity"):
                return f"{where or 'record'}: {value.text} is not a number"
            if not value.finite:
                return f"{where or 'record'}: {shown} is beyond the range of a 64-bit float"
            if not value.exact:
                return f"{where or 'record'}: {shown} has more digits than a 64-bit float holds"
        elif isinstance(value, int) and not isinstance(value, bool):
            # Python ints are exact; orjson writes up to 64 bits (signed or unsigned) and nothing more.
            if not jsontext.INT64_MIN <= value <= jsontext.UINT64_MAX:
                shown = "the value" if secret else str(value)[:40]
                return f"{where or 'record'}: {shown} is outside the 64-bit integer range"
    return None


def _bad_char(text: str) -> str:
    m = jsontext.BAD_UNICODE.search(text)
    code = ord(m.group()) if m else 0
    if 0xDC80 <= code <= 0xDCFF:
        return f"byte 0x{code - 0xDC00:02X} is not UTF-8, or a lone surrogate U+{code:04X}"
    return f"lone surrogate U+{code:04X}, half of a character"


def _path(parts: tuple[str, ...]) -> str:
    text = "".join(p if p.startswith("[") else ("." if i else "") + ascii(p)[1:-1] for i, p in enumerate(parts))
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any) -> Any:
    """``value`` with every ``Number`` made a float (orjson writes floats, not their subclasses); in place."""
    stack = [value]
    while stack:
        v = stack.pop()
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, item in list(items):
            if isinstance(item, jsontext.Number):
                v[k] = float(item)
            elif isinstance(item, (dict, list)):
                stack.append(item)
    if isinstance(value, jsontext.Number):
        return float(value)
    return value


def protected(record: Any, policy: str) -> Any:
    """``record`` with the PII policy applied before it enters Redis; a quarantined record's text too (None
    when the text cannot be read: then it is withheld, never kept unmasked)."""
    if quarantined(record):
        marker = record[QUARANTINE]
        text = marker.get("text")
        return {QUARANTINE: {**marker, "text": pii.protect_text(text, policy) if isinstance(text, str) else None}}
    return pii.protect(record, policy)
