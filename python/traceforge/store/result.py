"""Query results as polars frames and as plain values: the one conversion the API and the CLI share.

``to_polars`` turns a DuckDB relation into a frame that always exists: duplicate column names (``SELECT *``
over a ``JOIN ... USING``) are made unique the way DuckDB names them in a subquery (``name``, ``name_1``),
and the types polars cannot take or would change (INTERVAL, UNION, BIT, BIGNUM, TIME WITH TIME ZONE, and
UHUGEINT, which polars reads as a signed number) are converted in DuckDB first. ``json_value`` and
``cell_text`` turn one value of such a frame into JSON and into text, for every type.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import QueryError

if TYPE_CHECKING:
    import polars as pl

#: DuckDB type ids polars cannot read (or reads without their offset), converted to VARCHAR first.
_AS_TEXT = {"interval", "union", "bit", "bignum", "varint", "time with time zone"}
#: Words in a nested type's name that mean it holds one of those types somewhere inside.
_AS_TEXT_WORDS = ("INTERVAL", "UNION", "BIT", "BIGNUM", "VARINT", "WITH TIME ZONE", "UHUGEINT")


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as DuckDB does: the second ``name`` becomes ``name_1``, then ``name_2``.

    Names compare without regard to case, as DuckDB's do; a generated name never repeats a given one.
    """
    taken = {name.lower() for name in names}
    seen: set[str] = set()
    out = []
    for name in names:
        candidate = name
        if candidate.lower() in seen:
            n = 1
            while f"{name}_{n}".lower() in taken or f"{name}_{n}".lower() in seen:
                n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _conversion(duck_type: Any) -> str:
    """The SQL cast a column of this DuckDB type needs before polars reads it ('' for none)."""
    type_id = str(getattr(duck_type, "id", "")).lower()
    text = str(duck_type).upper()
    if type_id == "uhugeint":
        return "::DECIMAL(38, 0)"  # exact, or a DuckDB conversion error: never a wrong number
    if type_id in _AS_TEXT:
        return "::VARCHAR"
    if type_id in {"list", "struct", "map", "array"} and any(word in text for word in _AS_TEXT_WORDS):
        return "::VARCHAR"
    return ""


def to_polars(relation: Any) -> pl.DataFrame:
    """Convert a DuckDB relation to polars through the Arrow C stream (no pyarrow needed).

    Raises ``duckdb.Error`` for errors while the query runs, like the relation itself.
    """
    import duckdb
    import polars as pl

    if relation is None:  # a statement without a result (CREATE, INSERT...)
        return pl.DataFrame()
    names = list(relation.columns)
    unique = unique_names(names)
    casts = [_conversion(t) for t in relation.types]
    if unique != names or any(casts):
        columns = []
        for i, (name, cast) in enumerate(zip(unique, casts)):
            quoted = name.replace('"', '""')
            columns.append(f'#{i + 1}{cast} AS "{quoted}"')
        relation = relation.project(", ".join(columns))
    try:
        return pl.DataFrame(relation)
    except (KeyboardInterrupt, SystemExit, duckdb.Error):
        raise
    except BaseException as exc:  # polars refusing a type (its panics are BaseExceptions)
        text = str(exc).strip().splitlines()
        raise QueryError(
            f"cannot convert the result to polars: {text[0] if text else type(exc).__name__}"
        ) from exc


def json_value(value: Any) -> Any:
    """A value of a result frame as JSON can hold it: numbers stay numbers, lists and structs nest.

    DECIMAL and HUGEINT values (``sum()`` of integers) become JSON numbers: whole ones exactly, others as
    floats. Non-finite floats become ``null`` (JSON has no NaN); times and dates are ISO 8601 text; bytes
    are text in DuckDB's BLOB notation.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return blob_text(bytes(value))
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "to_list"):  # a polars Series (an Array or List cell)
        return [json_value(v) for v in value.to_list()]
    return str(value)


def cell_text(value: Any) -> str:
    """A value of a result frame as one piece of text (``NULL`` for null; lists and structs as JSON)."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return blob_text(bytes(value))
    if isinstance(value, (dict, list, tuple)) or hasattr(value, "to_list"):
        return json.dumps(json_value(value), ensure_ascii=False)
    return str(value)


def blob_text(data: bytes) -> str:
    r"""Bytes as DuckDB writes a BLOB: printable ASCII as is, every other byte as ``\xHH``."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in data)


def text_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The frame with every column a CSV writer cannot write (lists, structs, bytes) as text (JSON)."""
    import polars as pl

    columns = []
    for series in df.get_columns():
        dtype = series.dtype
        if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
            texts = [None if v is None else cell_text(v) for v in series.to_list()]
            series = pl.Series(series.name, texts, dtype=pl.String)
        columns.append(series)
    return pl.DataFrame(columns)


__all__ = ["blob_text", "cell_text", "json_value", "text_frame", "to_polars", "unique_names"]
