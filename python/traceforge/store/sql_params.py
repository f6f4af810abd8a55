"""Query parameters written into the SQL text as literals, instead of bound by DuckDB's Python client.

DuckDB 1.4's Python client imports pandas (and with it numpy and pyarrow) to convert the first bound
parameter of a process whenever pandas is installed, which it is on most machines that run models: on the
lent H100 host that cost 0.9 s and ~90 MB in every ``traceforge`` command, half of an x6 ingest there
(duckdb/duckdb-python#300 describes the same slowdown). Every query traceforge runs with parameters goes
through :func:`bind`, which renders them as SQL literals, so DuckDB never sees a Python value to convert.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

#: Parameters of a query: positional (``?``, ``$1``) or named (``$name``).
Params = Optional[Union[Sequence[Any], Mapping[str, Any]]]


def literal(value: Any) -> str:
    """``value`` as a DuckDB SQL literal of the type DuckDB would bind it as."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        value = int(value)  # an int subclass (an IntEnum) as its number
        if -(2**63) <= value < 2**63:
            return str(value)
        return f"{value}::UBIGINT" if 0 <= value < 2**64 else f"{value}::HUGEINT"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"'{value}'::DOUBLE"
        return f"{value!r}::DOUBLE"
    if isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):  # NaN or infinity
            return f"'{value}'::DOUBLE"
        scale = max(0, -exponent)
        width = max(len(digits) + max(0, exponent), scale + 1 if scale else 1)
        return f"'{value}'::DECIMAL({width}, {scale})" if width <= 38 else f"'{value}'::DOUBLE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "'" + "".join(f"\\x{b:02X}" for b in bytes(value)) + "'::BLOB"
    if isinstance(value, _dt.datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return f"{kind} '{value.isoformat(sep=' ')}'"
    if isinstance(value, _dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, _dt.time):
        return f"TIME '{value.isoformat()}'"
    if isinstance(value, _dt.timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return f"to_microseconds({micros})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return literal(item())
    raise TypeError(f"cannot write a {type(value).__name__} into SQL as a literal")


def bind(query: str, params: Params = None) -> str:
    """``query`` with its ``?``, ``$1`` and ``$name`` placeholders replaced by the literals of ``params``.

    Placeholders inside quoted strings, quoted names and comments are left alone. Raises ``ValueError``
    when the placeholders and the parameters do not match.
    """
    if params is None:
        return query
    named = isinstance(params, Mapping)
    values: Any = params
    out: list[str] = []
    positional = 0
    used: set[Any] = set()
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "'\"":
            end = _closing_quote(query, i)
            out.append(query[i:end])
            i = end
        elif query.startswith("--", i):
            end = query.find("\n", i)
            end = n if end < 0 else end
            out.append(query[i:end])
            i = end
        elif query.startswith("/*", i):
            end = query.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(query[i:end])
            i = end
        elif c == "?" and not named:
            if positional >= len(values):
                raise ValueError(f"the query has more placeholders than the {len(values)} parameters given")
            out.append(literal(values[positional]))
            used.add(positional)
            positional += 1
            i += 1
        elif c == "$" and i + 1 < n and (query[i + 1].isalnum() or query[i + 1] == "_"):
            j = i + 1
            while j < n and (query[j].isalnum() or query[j] == "_"):
                j += 1
            key = query[i + 1 : j]
            if named:
                if key not in values:
                    raise ValueError(f"no parameter named {key!r}")
                out.append(literal(values[key]))
                used.add(key)
            else:
                if not key.isdigit() or not 1 <= int(key) <= len(values):
                    raise ValueError(f"placeholder ${key} has no parameter among the {len(values)} given")
                out.append(literal(values[int(key) - 1]))
                used.add(int(key) - 1)
            i = j
        else:
            out.append(c)
            i += 1
    if len(used) != len(values):
        raise ValueError(f"the query uses {len(used)} of the {len(values)} parameters given")
    return "".join(out)


def _closing_quote(query: str, start: int) -> int:
    """Index just past the quoted string or name opening at ``start`` (a doubled quote escapes it)."""
    quote = query[start]
    i = start + 1
    while i < len(query):
        if query[i] == quote:
            if i + 1 < len(query) and query[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(query)
