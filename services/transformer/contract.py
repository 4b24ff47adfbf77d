"""The data contract (a JSON Schema the operator owns) and each page's observed schema, checked per record.

Each record is keyed by its shape (``signature``: its keys and the exact Python types of its values,
nested, built in C by ``tuple``/``map`` per object) and counted by that key; the field paths and JSON
types (``fields``) are expanded once per distinct shape, and feed the page's observed schema and the
contract's fast path, which compares them with the types the contract declares; only a record whose
shape differs is validated fully by jsonschema, whose errors name the field and the expected type, and
once per shape when they cannot depend on the values (``Contract.by_shape``). The policy then decides
(dlt's terms): ``evolve`` accepts the record and reports, ``freeze`` makes it invalid, ``discard_value``
drops the offending values and reports.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from transformer.validate import Problem, shown

DEFAULT_CONTRACT = Path(__file__).with_name("contracts") / "users.v1.json"
POLICIES = ("evolve", "freeze", "discard_value")
RULE = "contract"  # the rule name a freeze rejection carries (failed_rules, the quality report)
# JSON type names, as JSON Schema spells them.
_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
# Keywords the fast path understands; a schema using any other one (enum, minimum, $ref, ...) is always
# validated fully, since only jsonschema knows what they accept.
_SHAPE_KEYWORDS = {"type", "properties", "additionalProperties", "items"}
_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated"}

Fields = list[tuple[str, str]]
Shape = tuple[tuple[str, str], ...]  # a record's fields as a key: users of one shape share it
SHAPES_KEPT = 4096


class ContractError(ValueError):
    """The contract file cannot be used; the message names the file and the cause in one line."""


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value (``integer`` and ``number`` apart, as JSON Schema has them)."""
    name = _TYPES.get(type(value))
    if name is None:  # a subclass (bool is caught above): the closest JSON type
        name = next((n for t, n in _TYPES.items() if isinstance(value, t)), type(value).__name__)
    return name


def fields(record: dict[str, Any]) -> Fields:
    """Every field path of ``record`` with its JSON type: ``hair.color``, array items as ``path[]``."""
    out: Fields = []
    _walk(record, "", out)
    return out


def _walk(obj: dict[str, Any], prefix: str, out: Fields) -> None:
    # The hottest loop of the observed schema: locals and the exact-type table, no helper calls per field.
    types, append = _TYPES, out.append
    for key, value in obj.items():
        path = prefix + key if type(key) is str else prefix + str(key)
        kind = types.get(type(value)) or json_type(value)
        append((path, kind))
        if kind == "object":
            _walk(value, path + ".", out)
        elif kind == "array":
            _items(value, path + "[]", out)


def _items(items: list[Any], path: str, out: Fields) -> None:
    for value in items:
        kind = _TYPES.get(type(value)) or json_type(value)
        out.append((path, kind))
        if kind == "object":
            _walk(value, path + ".", out)
        elif kind == "array":
            _items(value, path + "[]", out)


# Value types a signature stands for as they are: JSON's scalars as orjson parses them, objects and arrays
# (looked into). A shape whose signature holds any other type (a subclass, a type another parser returns) is
# keyed by its expanded fields, record by record, so no two shapes share a key.
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list})
_EXPANDED = object()  # marks a key that is a record's expanded fields


def signature(record: dict[str, Any]) -> Any:
    """A hashable key equal for two records whose ``fields`` are equal, and (when ``_plain``) only for them."""
    # The hottest path of the observed schema: an object's keys and value types are taken in C (tuple, map);
    # only the objects and arrays it holds are looked into.
    kinds = tuple(map(type, record.values()))
    if dict not in kinds and list not in kinds:
        return (tuple(record), kinds)
    return (tuple(record), kinds, tuple([_nested(v) for v in record.values() if type(v) is dict or type(v) is list]))


def _nested(value: Any) -> Any:
    if type(value) is dict:
        return signature(value)
    kinds = tuple(map(type, value))
    if dict not in kinds and list not in kinds:
        return kinds
    return (kinds, tuple([_nested(v) for v in value if type(v) is dict or type(v) is list]))


def _plain(key: Any) -> bool:
    """Whether every type in a signature is one it stands for (then equal keys mean equal fields)."""
    for part in key:
        if isinstance(part, tuple):
            if not _plain(part):
                return False
        elif isinstance(part, type) and part not in _PLAIN:
            return False
    return True


# Signature -> its expanded fields (None: not ``_plain``), shared by the pages of a process (most users share a
# handful of shapes); emptied when it grows past SHAPES_KEPT.
_EXPANSIONS: dict[Any, Shape | None] = {}


def _expanded(key: Any, record: dict[str, Any]) -> Shape | None:
    if key in _EXPANSIONS:
        return _EXPANSIONS[key]
    if len(_EXPANSIONS) >= SHAPES_KEPT:
        _EXPANSIONS.clear()
    shape = _EXPANSIONS[key] = tuple(fields(record)) if _plain(key) else None
    return shape


class Contract:
    """A loaded contract: its jsonschema validator, the shape its fast path checks, and the policy."""

    def __init__(self, schema: dict[str, Any], name: str, policy: str) -> None:
        if policy not in POLICIES:
            raise ContractError(f"contract policy {policy!r} is not one of {', '.join(POLICIES)}")
        self.name, self.policy = name, policy
        self.validator = Draft202012Validator(schema)
        self.types: dict[str, frozenset[str] | None] = {}  # path -> allowed types (None: any)
        self.closed: set[str] = set()  # object paths that allow no other field ("" is the record)
        self.exact = _shape(schema, "", self.types, self.closed)  # the fast path decides alone
        # Verdicts of the shapes seen (most users share a handful); emptied when it grows past SHAPES_KEPT.
        self.verdicts: dict[Shape, bool] = {}
        # Signature -> the violations every record of that shape has (``by_shape``): validated once, not per record.
        self.known: dict[Any, list[dict[str, Any]]] = {}

    def fits(self, shape: Shape) -> bool:
        """``conforms`` for a record's shape, remembered: a page of users of one shape pays for it once."""
        verdict = self.verdicts.get(shape)
        if verdict is None:
            if len(self.verdicts) >= SHAPES_KEPT:
                self.verdicts.clear()
            verdict = self.verdicts[shape] = self.conforms(shape)
        return verdict

    def conforms(self, found: Fields | Shape) -> bool:
        """Whether the record's fields fit the contract's shape (then it is valid without a full validation)."""
        types, closed = self.types, self.closed
        for path, kind in found:
            if path in types:
                allowed = types[path]
                if allowed is None or kind in allowed or (kind == "integer" and "number" in allowed):
                    continue
                return False
            if path.endswith("[]"):
                continue  # items of an array the contract leaves open
            cut = path.rfind(".")
            if (path[:cut] if cut > 0 else "") in closed:
                return False  # a field the contract does not know, under an object that allows no other
        return self.exact

    def by_shape(self, shape: Shape) -> bool:
        """Whether every record of ``shape`` breaks the contract in the same ways (its violations can be shared).

        True for a contract the fast path reads whole (``exact``: only types and fields), unless a float sits
        where only an integer is allowed: jsonschema takes 30.0 as an integer and 30.5 not, a value's matter.
        """
        if not self.exact:
            return False
        types = self.types
        for path, kind in shape:
            if kind == "number":
                allowed = types.get(path)
                if allowed is not None and "integer" in allowed and "number" not in allowed:
                    return False
        return True

    def violations(self, record: Any) -> list[dict[str, Any]]:
        """Each way ``record`` breaks the contract: ``{path, expected, got, at}`` (``at``: the keys to the value)."""
        out = []
        for error in self.validator.iter_errors(record):
            at = list(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                known = set(error.schema.get("properties", {}))
                for key in error.instance:
                    if key not in known:
                        path = [*at, key]
                        out.append({"path": _dotted(path), "expected": "absent", "got": "unknown field", "at": path})
            elif error.validator == "type":
                expected = error.validator_value
                expected = " or ".join(expected) if isinstance(expected, list) else str(expected)
                got = json_type(error.instance)
                out.append({"path": _dotted(at), "expected": expected, "got": got, "at": at})
            else:
                # The schema's words, never jsonschema's message: that quotes the value, which may be personal data.
                rule = f"{error.validator} {orjson.dumps(error.validator_value, default=str).decode()}"[:200]
                out.append({"path": _dotted(at) or "record", "expected": rule, "got": "", "at": at})
        return out


def _dotted(at: list[Any]) -> str:
    """``['company', 'address', 'city']`` -> ``company.address.city``; list indexes become ``[]``."""
    text = ""
    for key in at:
        text += "[]" if isinstance(key, int) else ("." + str(key) if text else str(key))
    return text


def _shape(schema: Any, path: str, types: dict[str, frozenset[str] | None], closed: set[str]) -> bool:
    """Fill ``types``/``closed`` from ``schema``; False when it uses keywords only a full validation can judge."""
    if not isinstance(schema, dict):
        return False  # true/false schemas: leave them to jsonschema
    exact = set(schema) <= _SHAPE_KEYWORDS | _ANNOTATIONS
    kind = schema.get("type")
    allowed = frozenset([kind] if isinstance(kind, str) else kind) if kind is not None else None
    if path:
        types[path] = allowed
    if schema.get("additionalProperties") is False:
        closed.add(path)
    elif "additionalProperties" in schema and schema["additionalProperties"] is not True:
        exact = False
    prefix = path + "." if path else ""
    for key, sub in schema.get("properties", {}).items():
        exact = _shape(sub, prefix + key, types, closed) and exact
    if "items" in schema:
        exact = _shape(schema["items"], path + "[]", types, closed) and exact
    return exact


def load_contract(path: str | Path, policy: str) -> Contract:
    """The contract at ``path`` (empty: the one shipped for DummyJSON users); ContractError when unusable."""
    path = Path(path) if path else DEFAULT_CONTRACT
    try:
        schema = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ContractError(f"contract {path}: cannot be read: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"contract {path}: not JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ContractError(f'contract {path}: must be a JSON Schema object with "type": "object" (a user)')
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise ContractError(f"contract {path}: not a valid JSON Schema at {where}: {exc.message}") from exc
    return Contract(schema, path.name.removesuffix(".json"), policy)


class PageSchema:
    """One page's observed schema and contract violations, as a compact summary for the processed entry."""

    def __init__(self, contract: Contract | None) -> None:
        self.contract = contract
        self.records = 0
        # Signature -> [records of that shape on the page, its fields, the contract's fast-path verdict]: one
        # entry, so a record's signature (a nested tuple, whose hash is not cached) is hashed once here.
        self.shapes: dict[Any, list[Any]] = {}
        self.broken: dict[str, dict[str, Any]] = {}  # path -> {expected, got: {type: n}}
        self.broken_records = 0
        self.discarded = 0

    def take(self, record: Any) -> tuple[Any, list[Problem]]:
        """Observe ``record``; check it against the contract. Returns the record (offending values dropped
        under ``discard_value``) and, under ``freeze``, a problem per violation."""
        if not isinstance(record, dict):
            return record, []
        key = signature(record)
        self.records += 1
        contract = self.contract
        seen = self.shapes.get(key)
        if seen is None:
            # Expanded before any value is discarded: the fields are the record's as it came.
            shape = _expanded(key, record)
            if shape is None:  # a type the signature cannot stand for: this record's own fields are its key
                shape = tuple(fields(record))
                key = (_EXPANDED, shape)
                seen = self.shapes.get(key)
            if seen is None:
                seen = self.shapes[key] = [0, shape, contract is None or contract.fits(shape)]
        seen[0] += 1
        if seen[2]:
            return record, []
        assert contract is not None  # without one every shape fits
        broken = contract.known.get(key)  # read only: shared by the records of the shape
        if broken is None:
            broken = contract.violations(record)
            if contract.by_shape(seen[1]):
                if len(contract.known) >= SHAPES_KEPT:
                    contract.known.clear()
                contract.known[key] = broken
        if not broken:
            return record, []
        self.broken_records += 1
        for v in broken:
            entry = self.broken.setdefault(v["path"], {"expected": v["expected"], "got": {}})
            entry["got"][v["got"]] = entry["got"].get(v["got"], 0) + 1
        if contract.policy == "freeze":
            return record, [Problem(RULE, _words(v, contract.name)) for v in broken]
        if contract.policy == "discard_value":
            self.discarded += _discard(record, [v["at"] for v in broken])
        return record, []

    def summary(self) -> dict[str, Any]:
        """``{records, fields: {path: {present, types}}, contract: {...}}`` (merged per run by the saver)."""
        values: Counter[tuple[str, str]] = Counter()  # (path, type) -> values
        present: Counter[str] = Counter()  # path -> records holding it
        for n, shape, _ in self.shapes.values():
            for field in shape:
                values[field] += n
            for path in {path for path, _ in shape}:  # a path under an array may occur more than once
                present[path] += n
        table: dict[str, dict[str, Any]] = {}
        for (path, kind), n in values.items():
            # A field name holding U+0000 is spelled with its escape: every store keeps the same name.
            entry = table.setdefault(shown(path), {"present": present[path], "types": {}})
            entry["types"][kind] = n
        out: dict[str, Any] = {"records": self.records, "fields": table}
        if self.contract is not None:
            out["contract"] = {
                "name": self.contract.name,
                "policy": self.contract.policy,
                "records": self.broken_records,
                "discarded": self.discarded,
                "violations": {shown(path): v for path, v in self.broken.items()},
            }
        return out


def _words(violation: dict[str, Any], name: str) -> str:
    """A freeze rejection in words: the field, what it holds and what the contract expects."""
    path, expected, got = violation["path"], violation["expected"], violation["got"]
    if expected == "absent":
        return f"{path}: unknown field (not in contract {name})"
    if got:
        return f"{path}: {got} where contract {name} expects {expected}"
    return f"{path}: breaks contract {name}: {expected}"


def _discard(record: dict[str, Any], paths: list[list[Any]]) -> int:
    """Drop the values at ``paths`` from ``record`` (deepest and last first, so indexes stay right)."""
    dropped = 0
    for at in sorted((p for p in paths if p), key=_order, reverse=True):
        parent: Any = record
        for key in at[:-1]:
            parent = parent[key]
        try:
            del parent[at[-1]]
            dropped += 1
        except (KeyError, IndexError):
            continue  # already dropped with its parent
    return dropped


def _order(at: list[Any]) -> list[tuple[int, Any]]:
    return [(0, k) if isinstance(k, int) else (1, str(k)) for k in at]
