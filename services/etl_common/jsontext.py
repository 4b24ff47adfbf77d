"""Tolerant JSON text: read what RFC 8259's strict readers refuse, keep numbers exact, write ASCII-safe text.

orjson (the pipeline's codec) refuses ``NaN``/``Infinity``, lone surrogates and bytes that are not
UTF-8, reads integers past 64 bits and floats with more digits than a double holds inexactly, and
cannot write containers nested deeper than 254 levels. This module reads such text with the
standard library instead, keeping every number's source text (``Number``), cutting containers
nested deeper than a limit out as text (so no reader recurses without bound), and writes values
back as ASCII JSON that keeps those texts (``dumps_exact``). See docs/reliability.md.
"""

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

# The raw-stream marker of a record that could not travel as JSON values: ``{QUARANTINE: {reason, text}}``.
QUARANTINE = "$unreadable"
# What a container cut out for being too deep is replaced by while parsing (a string no JSON producer writes).
DEEP_MARK = "\x00etl-too-deep:"
# A lone surrogate: what a cut emoji (``\ud83d``) or a byte that is not UTF-8 (read with surrogateescape) becomes.
BAD_UNICODE = re.compile("[\ud800-\udfff]")
# One JSON string token, or one bracket: enough to measure nesting without a recursive parser.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_NON_ASCII = re.compile("[^\x00-\x7f]")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


class Number(float):
    """A float read from JSON text that remembers the text (``NaN``, ``1e400``, ``0.100000000000000005``)."""

    text: str

    def __new__(cls, text: str) -> "Number":
        value = super().__new__(cls, text)
        value.text = text
        return value

    @property
    def finite(self) -> bool:
        """False for ``NaN``, ``Infinity`` and numbers too large for a double (``1e400``)."""
        return self.text not in ("NaN", "Infinity", "-Infinity") and abs(float(self)) != float("inf")

    @property
    def exact(self) -> bool:
        """Whether the double equals the number the text wrote (``0.1`` does; 20 significant digits may not)."""
        try:
            return Decimal(self.text) == Decimal(repr(float(self)))
        except InvalidOperation:
            return False


def quarantined(record: Any) -> bool:
    """Whether ``record`` is the quarantine marker the extractor puts in place of an unreadable record."""
    return isinstance(record, dict) and len(record) == 1 and isinstance(record.get(QUARANTINE), dict)


class HugeInt(str):
    """An integer literal too long for int() (4,300 digits or more): kept as its text."""


def _int(text: str) -> int | str:
    return int(text) if len(text) < 4000 else HugeInt(text)


def cut_deep(text: str, max_depth: int) -> tuple[str, list[str]]:
    """``text`` with every container opening below ``max_depth`` levels replaced by a ``DEEP_MARK`` string.

    Returns the new text and the cut-out texts (index ``i`` for the mark ``DEEP_MARK + str(i)``).
    """
    depth, start, last = 0, -1, 0
    pieces: list[str] = []
    cuts: list[str] = []
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == '"':
            continue
        if tok in "[{":
            depth += 1
            if depth == max_depth + 1:
                start = m.start()
        else:
            if depth == max_depth + 1 and start >= 0:
                pieces.append(text[last:start])
                pieces.append(json.dumps(DEEP_MARK + str(len(cuts))))
                cuts.append(text[start : m.end()])
                last, start = m.end(), -1
            depth -= 1
    if not cuts:
        return text, cuts
    pieces.append(text[last:])
    return "".join(pieces), cuts


def loads_tolerant(data: bytes | str, max_depth: int) -> tuple[Any, list[str]]:
    """The value of JSON ``data`` read leniently, and the texts cut out below ``max_depth`` (see ``cut_deep``).

    Accepts ``NaN``, ``Infinity``, ``-Infinity``, lone surrogate escapes and bytes that are not UTF-8
    (kept as lone surrogates by surrogateescape); floats come back as ``Number``. Raises ValueError
    when the text is not JSON even so.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    text, cuts = cut_deep(text, max_depth)
    try:
        value = json.loads(text, parse_float=Number, parse_constant=Number, parse_int=_int)
    except RecursionError as exc:
        raise ValueError("nested too deeply to read") from exc
    return value, cuts


def _ascii(text: str) -> str:
    return json.dumps(text)  # ensure_ascii: lone surrogates come out as \udXXX escapes, never as raw code points


def dumps_exact(value: Any, cuts: list[str] | None = None) -> str:
    """ASCII JSON text of ``value``: numbers as their source wrote them, cut-out containers put back.

    The result is safe for any JSON writer (no lone surrogate survives outside an escape); it is
    strict JSON unless the value holds ``NaN``/``Infinity`` or a cut-out text that was not.
    """
    out: list[str] = []
    _write(value, cuts or [], out)
    return "".join(out)


def _write(v: Any, cuts: list[str], out: list[str]) -> None:
    if isinstance(v, Number):
        out.append(v.text)
    elif isinstance(v, HugeInt):
        out.append(str(v))
    elif isinstance(v, str):
        if v.startswith(DEEP_MARK) and v[len(DEEP_MARK) :].isdigit() and int(v[len(DEEP_MARK) :]) < len(cuts):
            # The source's own text, with every non-ASCII character escaped so the text stays writable.
            out.append(_NON_ASCII.sub(lambda m: json.dumps(m.group())[1:-1], cuts[int(v[len(DEEP_MARK) :])]))
        else:
            out.append(_ascii(v))
    elif v is None or isinstance(v, (bool, int, float)):
        out.append(json.dumps(v))
    elif isinstance(v, dict):
        out.append("{")
        for i, (k, item) in enumerate(v.items()):
            out.append(("," if i else "") + _ascii(str(k)) + ":")
            _write(item, cuts, out)
        out.append("}")
    elif isinstance(v, list):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _write(item, cuts, out)
        out.append("]")
    else:
        out.append(_ascii(str(v)))
