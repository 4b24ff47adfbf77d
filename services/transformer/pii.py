"""The sensitive-data policy, applied in this one place to every copy of a record that leaves the transformer."""

from typing import Any

# Always removed: never stored nor served.
DROPPED = ("password",)
# Masked to their last 4 characters unless the policy says drop or keep.
SENSITIVE = ("ssn", "ein", "bank.cardNumber", "bank.iban", "crypto.wallet")
KEEP_CHARS = 4


def mask(value: Any) -> Any:
    """``'****1234'``: the last 4 characters kept; non-strings are shown as strings first."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= KEEP_CHARS:
        return "*" * len(text)
    return "*" * (len(text) - KEEP_CHARS) + text[-KEEP_CHARS:]


def protect(record: Any, policy: str = "mask") -> Any:
    """A copy of ``record`` with the password removed and the sensitive fields per ``policy``."""
    if not isinstance(record, dict):
        return record
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
