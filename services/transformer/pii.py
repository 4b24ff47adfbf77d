"""The sensitive-data policy, applied in this one place to every copy of a record that leaves the transformer."""

from typing import Any

from etl_common import jsontext

# Always removed: never stored nor served.
DROPPED = ("password",)
# Masked to their last 4 characters unless the policy says drop or keep.
SENSITIVE = ("ssn", "ein", "bank.cardNumber", "bank.iban", "crypto.wallet")
KEEP_CHARS = 4
# A record's own nesting limit (the extractor quarantines deeper ones); JSON text read here is cut below it.
_MAX_DEPTH = 64
# JSON text inside JSON text inside ...: how many encodings deep the policy still looks.
_MAX_ENCODINGS = 8
WITHHELD = "[withheld: JSON encoded in strings more than 8 times]"


def mask(value: Any) -> Any:
    """``'****1234'``: the last 4 characters kept; non-strings are shown as strings first."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= KEEP_CHARS:
        return "*" * len(text)
    return "*" * (len(text) - KEEP_CHARS) + text[-KEEP_CHARS:]


def protect(record: Any, policy: str = "mask", _encodings: int = 0) -> Any:
    """A copy of ``record`` with the password removed and the sensitive fields per ``policy``, whatever its shape.

    Objects are protected; arrays item by item (arrays of users); a string holding JSON (a
    double-encoded user) is read, protected and written back as text. Other values are returned as they are.
    """
    if isinstance(record, dict):
        return _protect_object(record, policy)
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


def _protect_object(record: dict[str, Any], policy: str) -> dict[str, Any]:
    out = dict(record)
    for key in DROPPED:
        out.pop(key, None)
    if policy == "keep":
        return out
    for path in SENSITIVE:
        parent_key, _, leaf = path.rpartition(".")
        if parent_key:
            parent = out.get(parent_key)
            if not isinstance(parent, dict) or leaf not in parent:
                continue
            parent = out[parent_key] = dict(parent)
        else:
            parent = out
            if leaf not in parent:
                continue
        if policy == "drop":
            del parent[leaf]
        else:
            parent[leaf] = mask(parent[leaf])
    return out
