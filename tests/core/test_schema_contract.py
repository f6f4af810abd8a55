"""One schema contract across the Rust/Python seam.

The core streams each table of a trace as Arrow batches; the store's DDL (``traceforge.store.schema``)
declares the same tables. ``INSERT ... BY NAME`` casts silently, so a column the core renames, drops or
retypes would show up only as NULLs or a lossy cast. This test reads every table the core streams for real
exports and checks its columns and types equal the DDL's, identity columns (added at insert) aside.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from traceforge import _core
from traceforge.store import Store
from traceforge.store.schema import (
    DERIVED_STORAGE,
    DERIVED_TABLES,
    ROW_FIELDS,
    STORAGE_DDL,
    STORAGE_IDENTITY,
    STORAGE_SCHEMA,
)

#: Real exports with different table sets: GPU + NVTX (2025.3), CUDA graphs, the 2022.4 schema.
EXPORTS = (
    "small_matmul_h100_nsys2025.3.sqlite",
    "known_graphmode_h200_nsys2025.3.sqlite",
    "cu11_driverapi_h200_nsys2022.4.sqlite",
)


#: Columns the core streams as a wider type than the DDL declares, which DuckDB narrows on insert: 64-bit
#: integers into INTEGER (ids, counts and levels that fit 32 bits) and the API label into its ENUM. Each
#: entry is checked to still hold, so this list can only shrink deliberately (when the core streams the
#: declared type itself).
STREAMED_WIDER: dict[tuple[str, str], tuple[str, str]] = {
    **{
        (t, "device_id"): ("BIGINT", "INTEGER")
        for t in (
            "devices",
            "gap_rows",
            "kernel_classes",
            "memops",
            "sync_events",
            "device_metrics",
            "stream_metrics",
            "concurrency_levels",
            "kernel_summary",
            "memop_summary",
        )
    },
    **{("devices", c): ("BIGINT", "INTEGER") for c in ("sm_count", "cuda_device")},
    **{
        ("kernel_classes", c): ("BIGINT", "INTEGER")
        for c in (
            "kernel_class",
            "grid_x",
            "grid_y",
            "grid_z",
            "block_x",
            "block_y",
            "block_z",
            "registers_per_thread",
        )
    },
    ("api_call_classes", "call_class"): ("BIGINT", "INTEGER"),
    ("api_call_classes", "api"): ("VARCHAR", "ENUM('runtime', 'driver')"),
    **{(t, "level"): ("BIGINT", "INTEGER") for t in ("nvtx_ranges", "concurrency_levels", "nvtx_projection")},
    **{
        (t, c): ("BIGINT", "INTEGER")
        for t in ("device_metrics", "stream_metrics")
        for c in ("max_concurrency", "stream_count")
    },
}


def _declared(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(column, type) of a table as the store's DDL declares it, without the identity columns."""
    if table in STORAGE_DDL:
        identity = set(STORAGE_IDENTITY[table])
        if table in ROW_FIELDS:
            return [(name, kind) for name, kind in ROW_FIELDS[table] if name not in identity]
        schema, name = STORAGE_SCHEMA, table
    else:
        identity = {"trace_id", "metric_version"} if table in DERIVED_TABLES else {"trace_id"}
        schema, name = "main", DERIVED_STORAGE.get(table, table)
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' AND table_name = '{name}' ORDER BY ordinal_position"
    ).fetchall()
    assert rows, f"{schema}.{name} is not declared by the store's DDL"
    return [(column, kind) for column, kind in rows if column not in identity]


def _streamed(con: duckdb.DuckDBPyConnection, stream: object) -> list[tuple[str, str]]:
    """(column, DuckDB type) of an Arrow stream from the core, as DuckDB reads it on insert."""
    tf_stream = stream  # noqa: F841  (DuckDB's replacement scan reads the local variable)
    con.execute("CREATE OR REPLACE TEMP TABLE _streamed AS SELECT * FROM tf_stream")
    return [(row[0], row[1]) for row in con.execute("DESCRIBE _streamed").fetchall()]


@pytest.mark.parametrize("export", EXPORTS)
def test_every_streamed_table_has_the_columns_and_types_of_its_ddl(
    export: str, real_export, tmp_path: Path
) -> None:
    path = real_export(export)
    store = Store(tmp_path / "contract.duckdb")
    try:
        con = store.con
        handle = _core.open_trace(str(path))
        seen = []
        for table, stream in handle.tables():
            streamed = _streamed(con, stream)
            declared = _declared(con, table)
            names = [column for column, _kind in streamed]
            assert names == [column for column, _kind in declared], f"{export}: {table} columns differ"
            for (column, kind), (_, declared_kind) in zip(streamed, declared):
                expected = STREAMED_WIDER.get((table, column), (declared_kind, declared_kind))
                assert (kind, declared_kind) == expected, f"{export}: {table}.{column} streams {kind}"
            seen.append(table)
    finally:
        store.close()
    # The core streams every storage table and every derived table the store declares.
    expected = set(STORAGE_DDL) | {DERIVED_STORAGE.get(t, t) for t in DERIVED_TABLES}
    assert expected <= set(seen) | {"gaps"}, sorted(expected - set(seen))
