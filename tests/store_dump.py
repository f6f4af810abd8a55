"""Every row of every table of a store, for tests that check a store is exactly as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

IGNORED_TABLES = {"ingest_failures"}


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, keyed by table name."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        # Every schema's tables and views (the storage schema's too): nothing may change.
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        out = {}
        for schema, t in tables:
            if t in IGNORED_TABLES:
                continue
            rows = con.execute(f'SELECT * FROM "{schema}"."{t}"').fetchall()
            out[t if schema == "main" else f"{schema}.{t}"] = sorted(rows, key=repr)
        return out
    finally:
        con.close()
