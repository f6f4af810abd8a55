#!/usr/bin/env python3
"""Copy the nsys 2022.4 schema and static rows from the real 2022.4 GPU export (run once, keep the output).

Reads ``cu11_driverapi_h200_nsys2022.4.sqlite`` (``xz -dkc tests/data/cu11_driverapi_h200_nsys2022.4.sqlite.xz
> /tmp/x.sqlite``) and writes, next to the 2025.3 files in ``rust/traceforge-synth/data``:

- ``schema_2022_4.sql``: the export's ``CREATE TABLE`` statements, verbatim, in ``sqlite_master`` order;
- ``static_2022_4.sql``: ``INSERT`` statements for the enum tables (as they are there, typos included), the
  H200's ``TARGET_INFO_GPU`` row (the per-device template) and ``TARGET_INFO_SYSTEM_ENV`` (without its
  environment dump), copied from the export. 2022.4 has no ``META_DATA_CAPTURE``; ``EXPORT_META_DATA`` is
  written by the generator (its keys are copied there).

Usage: ``python rust/traceforge-synth/scripts/copy_schema_2022_4.py /tmp/x.sqlite [rust/traceforge-synth/data]``
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path


def sql_literal(value: object) -> str:
    """Render one value as an SQLite literal."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        # GpuInfo and a few other values are serialised protobufs that nsys stores as TEXT: keep their bytes.
        if any(b < 0x20 and b not in (9, 10, 13) for b in value):
            return f"CAST(X'{value.hex().upper()}' AS TEXT)"
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return f"CAST(X'{value.hex().upper()}' AS TEXT)"
    return "'" + str(value).replace("'", "''") + "'"


def main(src: str, out_dir: str) -> None:
    out = Path(out_dir)
    con = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    rows = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid").fetchall()
    (out / "schema_2022_4.sql").write_text(
        "-- CREATE TABLE statements of an nsys 2022.4.2 SQLite export (schema 3.0.0), copied verbatim from\n"
        "-- cu11_driverapi_h200_nsys2022.4.sqlite by scripts/copy_schema_2022_4.py, in sqlite_master order.\n"
        + "".join(f"{sql};\n" for _, sql in rows)
    )
    lines = ["-- Static rows of an nsys 2022.4.2 export, copied by scripts/copy_schema_2022_4.py."]
    for name, _ in rows:
        if name.startswith("ENUM_"):
            for row in con.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                lines.append(f"INSERT INTO {name} VALUES ({', '.join(sql_literal(v) for v in row)});")
    for row in con.execute("SELECT * FROM TARGET_INFO_GPU ORDER BY rowid LIMIT 1"):
        lines.append(f"INSERT INTO TARGET_INFO_GPU VALUES ({', '.join(sql_literal(v) for v in row)});")
    con.text_factory = bytes
    for row in con.execute("SELECT * FROM TARGET_INFO_SYSTEM_ENV ORDER BY rowid"):
        row = list(row)
        if row[2] == b"DeviceEnvironment":
            row[4] = ""
        lines.append(f"INSERT INTO TARGET_INFO_SYSTEM_ENV VALUES ({', '.join(sql_literal(v) for v in row)});")
    (out / "static_2022_4.sql").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).resolve().parents[1] / "data"))
