"""The sensitive-data policy: what of a record may leave the extractor and the transformer, whatever its shape.

The extractor applies it before a page enters Redis (so no secret reaches Redis's append-only file) and marks
the page with the policy it applied (``MARK``); the transformer applies it again only to a page that does not
carry its own policy's mark (idempotent: a masked value masks to itself).
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
# The raw-stream entry field naming the policy the extractor applied to every record of the page.
MARK = "pii"
# A record's own nesting limit (the extractor quarantines deeper ones); JSON text read here is cut below it.
_MAX_DEPTH = 64
# JSON text inside JSON text inside ...: how many encodings deep the policy still looks.
_MAX_ENCODINGS = 8
WITHHELD = "[withheld: JSON encoded in strings more than 8 times]"
# What may start a string holding JSON (an object, an array, a string: a double-encoded one), after JSON's
# white space (the only white space json.loads skips): any other string is left as it is without a look.
_JSON_STARTS = '{[" \t\n\r'
_PLAIN, _DROP, _SENSITIVE_KIND = 0, 1, 2
# Field names seen, classified once: a record's keys repeat on every page. Bounded, as names come from the source.
_KINDS_MAX = 4096
_KINDS: dict[str, int] = {}
_GONE = object()  # the result for a field the policy removes


def _norm(name: str) -> str:
    """``cardNumber``, ``card_number``, ``CARD-NUMBER`` -> ``cardnumber``: field names as people spell them."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


_DROPPED = frozenset(_norm(k) for k in DROPPED)
_SENSITIVE = frozenset(_norm(k) for k in SENSITIVE)


def _kind(name: Any) -> int:
    """``_DROP``, ``_SENSITIVE_KIND`` or ``_PLAIN`` for a field name (any spelling); cached per name."""
    kind = _KINDS.get(name) if type(name) is str else None
    if kind is None:
        key = _norm(name) if isinstance(name, str) else ""
        kind = _DROP if key in _DROPPED else _SENSITIVE_KIND if key in _SENSITIVE else _PLAIN
        if type(name) is str and len(_KINDS) < _KINDS_MAX:
            _KINDS[name] = kind
    return kind


def is_secret(name: str) -> bool:
    """Whether a field of this name is dropped or masked by the policy (any spelling)."""
    return _kind(name) != _PLAIN


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


def protect(record: Any, policy: str = "mask") -> Any:
    """``record`` with every password removed and every sensitive field per ``policy``; the input is untouched.

    The fields are found at any depth and in any letter case or separator style (``SSN``, ``card_number``);
    arrays are protected item by item; a string holding JSON (a double-encoded user, or a field such as
    ``bank`` given as JSON text) is read, protected and written back as text. ``policy`` is one of
    ``POLICIES``; ``keep`` still removes passwords. Only the objects and arrays on the way to a secret are
    copied: the rest of the result is shared with ``record`` (which is returned itself when it holds none).
    """
    return _protect(record, policy, 0)


def _protect(value: Any, policy: str, encodings: int) -> Any:
    if isinstance(value, dict):
        out: dict[Any, Any] | None = None
        for key, item in value.items():
            kind = _KINDS.get(key) if type(key) is str else None
            if kind is None:
                kind = _kind(key)
            if kind == _PLAIN:
                t = type(item)
                if t is str:
                    new = item if item[:1] not in _JSON_STARTS or not item else _protect(item, policy, encodings)
                else:
                    new = item if item is None or t in _LEAVES else _protect(item, policy, encodings)
            elif kind == _DROP or policy == "drop":
                new = _GONE
            elif policy == "mask":
                new = mask(item)
            else:
                new = _protect(item, policy, encodings)
            if new is not item and out is None:
                # The first change: the fields before it are taken as they are.
                out = {}
                for before, kept in value.items():
                    if before is key:
                        break
                    out[before] = kept
            if out is not None and new is not _GONE:
                out[key] = new
        return value if out is None else out
    if isinstance(value, list):
        items: list[Any] | None = None
        for i, item in enumerate(value):
            new = item if item is None or type(item) in _LEAVES else _protect(item, policy, encodings)
            if new is not item and items is None:
                items = value[:i]
            if items is not None:
                items.append(new)
        return value if items is None else items
    if isinstance(value, str) and value[:1] in _JSON_STARTS and value.lstrip(" \t\n\r")[:1] in ("{", "[", '"'):
        return _protect_text_value(value, policy, encodings)
    return value


# Types that never hold a secret nor JSON text: passed without a call (orjson gives exactly these types).
_LEAVES = frozenset((int, float, bool))


def _protect_text_value(text: str, policy: str, encodings: int) -> Any:
    """A string that may hold JSON: read, protected and written back when it does and something changed."""
    try:
        value, cuts = jsontext.loads_tolerant(text, _MAX_DEPTH)
    except ValueError:
        return text  # plain text that merely starts like JSON
    if not isinstance(value, (dict, list, str)):
        return text
    if encodings >= _MAX_ENCODINGS:
        # Deeper than anyone encodes by mistake: withheld rather than searched further.
        return WITHHELD
    protected = _protect(value, policy, encodings + 1)
    return text if protected is value or protected == value else jsontext.dumps_exact(protected, cuts)


def protect_text(text: str, policy: str = "mask") -> str | None:
    """The JSON ``text`` of a record with the policy applied; None when it cannot be read (never the unmasked text)."""
    try:
        value, cuts = jsontext.loads_tolerant(text, _MAX_DEPTH)
    except ValueError:
        return None
    return jsontext.dumps_exact(protect(value, policy), cuts)
