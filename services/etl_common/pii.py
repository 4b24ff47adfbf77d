"""The sensitive-data policy: what of a record may leave the extractor and the transformer, whatever its shape.

The extractor applies it before a page enters Redis (so no secret reaches Redis's append-only file), the
transformer again to every copy it hands on (idempotent: a masked value masks to itself).
"""

import re
from typing import Any

from etl_common import jsontext

# Always removed, wherever they appear and however they are spelled: never stored nor served.
DROPPED = ("password",)
# Masked to their last 4 characters (or dropped, or kept, as the policy says), wherever they appear.
SENSITIVE = ("ssn", "ein", "cardNumber", "iban", "wallet")
KEEP_CHARS = 4
POLICIES = ("mask", "drop", "keep")
# A record's own nesting limit (the extractor quarantines deeper ones); JSON text read here is cut below it.
_MAX_DEPTH = 64
# JSON text inside JSON text inside ...: how many encodings deep the policy still looks.
_MAX_ENCODINGS = 8
WITHHELD = "[withheld: JSON encoded in strings more than 8 times]"


def _norm(name: str) -> str:
    """``cardNumber``, ``card_number``, ``CARD-NUMBER`` -> ``cardnumber``: field names as people spell them."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


_DROPPED = frozenset(_norm(k) for k in DROPPED)
_SENSITIVE = frozenset(_norm(k) for k in SENSITIVE)


def is_secret(name: str) -> bool:
    """Whether a field of this name is dropped or masked by the policy (any spelling)."""
    key = _norm(name)
    return key in _DROPPED or key in _SENSITIVE


def mask(value: Any) -> Any:
    """``'****1234'``: the last 4 characters kept; numbers and booleans are shown as their JSON text first;
    arrays and objects are masked leaf by leaf (their shape stays, none of their values shows)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if len(text) <= KEEP_CHARS:
        return "*" * len(text)
    return "*" * (len(text) - KEEP_CHARS) + text[-KEEP_CHARS:]


def protect(record: Any, policy: str = "mask", _encodings: int = 0) -> Any:
    """A copy of ``record`` with every password removed and every sensitive field per ``policy``.

    The fields are found at any depth and in any letter case or separator style (``SSN``, ``card_number``);
    arrays are protected item by item; a string holding JSON (a double-encoded user, or a field such as
    ``bank`` given as JSON text) is read, protected and written back as text. ``policy`` is one of
    ``POLICIES``; ``keep`` still removes passwords.
    """
    if isinstance(record, dict):
        out: dict[str, Any] = {}
        for key, value in record.items():
            name = _norm(key) if isinstance(key, str) else ""
            if name in _DROPPED or (name in _SENSITIVE and policy == "drop"):
                continue
            if name in _SENSITIVE and policy == "mask":
                out[key] = mask(value)
            else:
                out[key] = protect(value, policy, _encodings)
        return out
    if isinstance(record, list):
        return [protect(item, policy, _encodings) for item in record]
    if isinstance(record, str) and record.lstrip()[:1] in ("{", "[", '"'):
        try:
            value, cuts = jsontext.loads_tolerant(record, _MAX_DEPTH)
        except ValueError:
            return record  # plain text that merely starts like JSON
        if not isinstance(value, (dict, list, str)):
            return record
        if _encodings >= _MAX_ENCODINGS:
            # Deeper than anyone encodes by mistake: withheld rather than searched further.
            return WITHHELD
        protected = protect(value, policy, _encodings + 1)
        return record if protected == value else jsontext.dumps_exact(protected, cuts)
    return record


def protect_text(text: str, policy: str = "mask") -> str | None:
    """The JSON ``text`` of a record with the policy applied; None when it cannot be read (never the unmasked text)."""
    try:
        value, cuts = jsontext.loads_tolerant(text, _MAX_DEPTH)
    except ValueError:
        return None
    return jsontext.dumps_exact(protect(value, policy), cuts)
