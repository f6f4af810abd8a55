"""The private storage layer: class tables, row loading, and layout upgrades of a store.

Public tables that would repeat the same strings on millions of rows (``kernels``, ``api_calls``,
``gaps``) are views over storage tables (``STORAGE_SCHEMA``) holding class ids and packed rows; this module
writes, deletes and loads those rows, and upgrades the stores of earlier layouts in place. Nothing here is
user API: :class:`traceforge.store.Store` and the ingest call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .schema import (
    ADDED_COLUMNS,
    API_CLASS_COLUMNS,
    DDL,
    DERIVED_TABLES,
    GPU_METRIC_CLASS_COLUMNS,
    IDLE_COLUMNS,
    KERNEL_CLASS_COLUMNS,
    METRIC_VERSION,
    ROW_COLUMN,
    ROW_FIELDS,
    STORAGE_DDL,
    STORAGE_IDENTITY,
    STORAGE_SCHEMA,
    TRACE_KEY_SQL,
    VIEW_DDL,
    pack_row_fields,
    storage_trace_key,
    trace_key,
)
from .sql_params import bind

#: Storage table recording which layout the store was created or upgraded to (version and digest).
LAYOUT_TABLE = "layout"

#: The store layout this build writes. Bump it with a step in ``LAYOUT_UPGRADES`` whenever stored rows
#: must be rewritten for the new layout (new tables and views alone need no step: they are created as
#: the store opens). 1: every public table a base table; 2: storage tables with plain columns; 3: the
#: storage tables' row fields packed in one STRUCT column (``ROW_COLUMN``); 4: the CUDA graph columns
#: (``ADDED_COLUMNS``) in existing tables (the new tables ``graph_launches``/``graph_summary`` are created
#: as the store opens); 5: the idle attribution columns (issue 15) in ``device_metrics`` (``ADDED_COLUMNS``)
#: and in the ``gap_rows`` row fields (the new host tables are created as the store opens); 6: the launch
#: split (issue 16): ``api_end_ns`` in the ``kernel_rows`` row fields and its columns in ``device_metrics``,
#: ``stream_metrics`` and ``kernel_summary`` (``ADDED_COLUMNS``).
LAYOUT_VERSION = 6


def layout_digest() -> str:
    """A digest of every statement defining the trace schema: it changes whenever the layout does."""
    import hashlib

    text = "\n".join([*STORAGE_DDL.values(), *DDL.values(), *VIEW_DDL.values()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Catalog query for every base table of the store holding rows keyed by trace: a ``trace_id`` or
#: ``trace_key`` column, or a packed row STRUCT (``ROW_COLUMN``) with a ``trace_key`` field.
_TRACE_COLUMNS_SQL = """
    SELECT c.schema_name, c.table_name, c.column_name, c.data_type
    FROM duckdb_columns() c JOIN duckdb_tables() t
      ON t.database_name = c.database_name AND t.schema_name = c.schema_name AND t.table_name = c.table_name
    WHERE c.database_name = current_database() AND NOT t.temporary
      AND (c.column_name IN ('trace_id', 'trace_key')
           OR (c.data_type LIKE 'STRUCT(%' AND c.data_type LIKE '%trace_key %'))
    ORDER BY c.schema_name, c.table_name, c.column_name
"""


def trace_keyed_tables(con: Any) -> dict[tuple[str, str], str]:
    """Every base table holding rows of a trace, found in the catalog, with the WHERE clause selecting them.

    ``(schema, table)`` -> the condition (one ``?`` for the trace id) selecting one trace's rows. Found
    rather than listed, so tables added later (in any schema) are covered. A table with both a
    ``trace_id`` and a ``trace_key`` column is matched on ``trace_id``.
    """
    found: dict[tuple[str, str], str] = {}
    for schema, table, column, _type in con.execute(_TRACE_COLUMNS_SQL).fetchall():
        where = {
            "trace_id": "trace_id = ?",
            "trace_key": f"trace_key = {TRACE_KEY_SQL.format('?')}",
        }.get(str(column), f'"{column}".trace_key = {TRACE_KEY_SQL.format("?")}')
        key = (str(schema), str(table))
        if key not in found or column == "trace_id":
            found[key] = where
    return found


def runner_tables() -> frozenset[str]:
    """The runner tables (``runs``, ``cells``, ...): their ``trace_id`` is a link to a trace, not its row."""
    from ..runners.results import COLUMNS

    return frozenset(COLUMNS)


def delete_trace_rows(con: Any, trace_id: str) -> None:
    """Remove every row of one trace, storage tables included (inside the caller's transaction).

    Every table of the store with a ``trace_id`` or ``trace_key`` (``trace_keyed_tables``) is covered, in
    every schema, except the runner tables, whose links are kept (``remove_trace`` clears them).
    """
    runners = runner_tables()
    for (schema, table), where in trace_keyed_tables(con).items():
        if schema == "main" and table in runners:
            continue
        con.execute(bind(f'DELETE FROM "{schema}"."{table}" WHERE {where}', [trace_id]))


def remove_trace(con: Any, trace_id: str) -> None:
    """Remove a trace from the store for good (inside the caller's transaction).

    Its rows in every table (``delete_trace_rows``), its ``ingest_failures`` (by its fingerprint and its
    file paths), and the runner tables' links to it: ``cells.trace_id`` (and any other runner table's
    ``trace_id``) is set to NULL, so the cell's own results stay.
    """
    con.execute(
        bind(
            "DELETE FROM ingest_failures WHERE path IN (SELECT source_path FROM traces WHERE trace_id = ? "
            "UNION SELECT export_path FROM traces WHERE trace_id = ?) "
            "OR fingerprint IN (SELECT fingerprint FROM traces WHERE trace_id = ?)",
            [trace_id, trace_id, trace_id],
        )
    )
    runners = runner_tables()
    for (schema, table), where in trace_keyed_tables(con).items():
        if schema == "main" and table in runners:
            con.execute(bind(f'UPDATE "{schema}"."{table}" SET trace_id = NULL WHERE {where}', [trace_id]))
    delete_trace_rows(con, trace_id)


def delete_storage_rows(con: Any, table: str, trace_id: str) -> None:
    """Remove one trace's rows from one storage table."""
    con.execute(
        bind(
            f"DELETE FROM {STORAGE_SCHEMA}.{table} WHERE {storage_trace_key(table)} = ?::UBIGINT",
            [trace_key(trace_id)],
        ),
    )


def insert_storage_rows(con: Any, table: str, source: str, params: Any = None, stream: Any = None) -> None:
    """Insert the flat rows of the query ``source`` (columns named like the table's) into a storage table.

    ``source`` may read an Arrow stream passed as ``stream`` under the name ``tf_stream``.
    """
    tf_stream = stream  # noqa: F841 - read by DuckDB's replacement scan
    if table in ROW_FIELDS:
        con.execute(
            bind(
                f"INSERT INTO {STORAGE_SCHEMA}.{table} SELECT {pack_row_fields(table)} FROM ({source})",
                params,
            )
        )
    else:
        con.execute(bind(f"INSERT INTO {STORAGE_SCHEMA}.{table} BY NAME {source}", params))


def insert_trace_rows(con: Any, table: str, stream: Any, trace_id: str) -> int:
    """Append the core's rows of one table (an Arrow stream) for one trace; returns how many.

    ``table`` is a storage table (``STORAGE_DDL``, in the storage schema) or a public table; the trace's
    identity columns (trace key, trace id, metric version) are added to the rows as that table needs them.
    """
    if table in STORAGE_DDL:
        identity = STORAGE_IDENTITY[table]
    else:
        identity = ("trace_id", "metric_version") if table in DERIVED_TABLES else ("trace_id",)
    values = {
        "trace_key": "?::UBIGINT AS trace_key",
        "trace_id": "?::VARCHAR AS trace_id",
        "metric_version": "?::INTEGER AS metric_version",
    }
    params = {"trace_key": trace_key(trace_id), "trace_id": trace_id, "metric_version": METRIC_VERSION}
    select = f"SELECT {', '.join(values[column] for column in identity)}, * FROM tf_stream"
    identity_values = [params[column] for column in identity]
    if table in STORAGE_DDL:
        insert_storage_rows(con, table, select, identity_values, stream)
        return _inserted(con)
    # DuckDB's replacement scan reads the local variable `tf_stream` through the Arrow C stream protocol.
    tf_stream = stream  # noqa: F841
    con.execute(bind(f"INSERT INTO {table} BY NAME {select}", identity_values))
    return _inserted(con)


def _inserted(con: Any) -> int:
    """The row count DuckDB reports for the INSERT just run (0 when it reports none)."""
    row = con.fetchone()
    return int(row[0]) if row else 0


def load_public_rows(con: Any, table: str, source: str, params: Any = None) -> None:
    """Insert rows shaped like the public table ``table`` (the query ``source``) into the store.

    For the views (``kernels``, ``api_calls``, ``gaps``) this derives the storage form (class ids, trace
    keys) in SQL. The traces concerned must have no rows in ``table`` yet. Used to load dataset
    partitions and to upgrade stores written before the storage tables existed.
    """
    if table not in VIEW_DDL:
        con.execute(bind(f"INSERT INTO {table} BY NAME SELECT * FROM ({source})", params))
        return
    key = TRACE_KEY_SQL.format("trace_id")
    con.execute(
        bind(f"CREATE OR REPLACE TEMP TABLE _tf_load AS SELECT {key} AS trace_key, * FROM ({source})", params)
    )
    try:
        if table == "kernels":
            _load_kernels(con)
        elif table == "api_calls":
            _load_api_calls(con)
        elif table == "gil_intervals":
            insert_storage_rows(
                con,
                "gil_rows",
                "SELECT * REPLACE (CASE state WHEN 'hold' THEN 0 WHEN 'wait' THEN 1 END::TINYINT AS state)"
                " FROM _tf_load",
            )
        elif table == "os_calls":
            _load_rows_with_classes(con, "os_call_rows", "os_call_names", "name_id", ("name",))
        elif table == "gpu_metrics":
            _load_rows_with_classes(
                con, "gpu_metric_rows", "gpu_metric_classes", "metric_class", GPU_METRIC_CLASS_COLUMNS
            )
        else:
            insert_storage_rows(con, "gap_rows", _with_missing_fields(con, "gap_rows", "_tf_load"))
    finally:
        con.execute("DROP TABLE IF EXISTS _tf_load")


def _with_missing_fields(con: Any, table: str, relation: str) -> str:
    """A query over ``relation`` that gives each field of the row table ``table`` it lacks as NULL.

    For rows written before a field existed, e.g. gaps before their idle columns.
    """
    present = {str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    missing = [f"NULL::{kind} AS {name}" for name, kind in ROW_FIELDS[table] if name not in present]
    return f"SELECT *{''.join(', ' + m for m in missing)} FROM {relation}"


def _load_classes(con: Any, classes: str, class_id: str, columns: tuple[str, ...]) -> None:
    """Fill a class table from ``_tf_load``: one id per distinct combination of ``columns`` per trace."""
    listed = ", ".join(columns)
    con.execute(
        f"INSERT INTO {STORAGE_SCHEMA}.{classes} BY NAME SELECT trace_key, trace_id, {listed}, "
        f"(row_number() OVER (PARTITION BY trace_key ORDER BY {listed}) - 1)::INTEGER AS {class_id} "
        f"FROM (SELECT DISTINCT trace_key, trace_id, {listed} FROM _tf_load)"
    )


def _class_join(classes: str, columns: tuple[str, ...]) -> str:
    same = " AND ".join(f"l.{c} IS NOT DISTINCT FROM c.{c}" for c in columns)
    return f"FROM _tf_load l JOIN {STORAGE_SCHEMA}.{classes} c ON l.trace_key = c.trace_key AND {same}"


def _load_kernels(con: Any) -> None:
    _load_rows_with_classes(con, "kernel_rows", "kernel_classes", "kernel_class", KERNEL_CLASS_COLUMNS)


def _load_api_calls(con: Any) -> None:
    _load_rows_with_classes(con, "api_call_rows", "api_call_classes", "call_class", API_CLASS_COLUMNS)


def _load_rows_with_classes(
    con: Any, rows: str, classes: str, class_id: str, columns: tuple[str, ...]
) -> None:
    """Fill ``classes`` from ``_tf_load``, then ``rows``: fields from the loaded rows, class ids joined."""
    _load_classes(con, classes, class_id, columns)
    # Rows written before a field existed (a dataset of an older version) give NULL there.
    present = {str(r[0]) for r in con.execute("DESCRIBE SELECT * FROM _tf_load").fetchall()}
    fields = ", ".join(
        f"c.{name}" if name == class_id else f"l.{name}" if name in present else f"NULL::{kind} AS {name}"
        for name, kind in ROW_FIELDS[rows]
    )
    insert_storage_rows(con, rows, f"SELECT {fields} " + _class_join(classes, columns))


def _upgrade_spelled_out_tables(con: Any) -> None:
    """Move the rows of a store written before the views existed (tables spelled out) into storage."""
    views = ", ".join(f"'{table}'" for table in VIEW_DDL)
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        f"AND table_type = 'BASE TABLE' AND table_name IN ({views})"
    ).fetchall()
    for (table,) in rows:
        old = f"_tf_spelled_out_{table}"
        con.execute(f"ALTER TABLE {table} RENAME TO {old}")
        load_public_rows(con, table, f"SELECT * FROM {old}")
        con.execute(f"DROP TABLE {old}")


def _upgrade_plain_row_tables(con: Any) -> None:
    """Pack the rows of storage tables written as plain columns (before ``ROW_COLUMN``) into one STRUCT."""
    row_tables = ", ".join(f"'{table}'" for table in ROW_FIELDS)
    rows = con.execute(
        bind(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = ? "
            f"AND column_name = 'trace_key' AND table_name IN ({row_tables})",
            [STORAGE_SCHEMA],
        ),
    ).fetchall()
    for (table,) in rows:
        old = f"_tf_plain_{table}"
        con.execute(f"ALTER TABLE {STORAGE_SCHEMA}.{table} RENAME TO {old}")
        con.execute(STORAGE_DDL[table])
        insert_storage_rows(con, table, _with_missing_fields(con, table, f"{STORAGE_SCHEMA}.{old}"))
        con.execute(f"DROP TABLE {STORAGE_SCHEMA}.{old}")


def _upgrade_graph_columns(con: Any) -> None:
    """Add the CUDA graph columns (``ADDED_COLUMNS``) to the tables of a store written before them.

    Rows already stored keep NULL there until ``traceforge reanalyze`` recomputes them (their
    ``metric_version`` is older than ``METRIC_VERSION``); ``traces.cuda_graph_trace`` stays NULL (the export
    is needed to tell the capture mode).
    """
    present = {
        (str(t), str(c))
        for t, c in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        ).fetchall()
    }
    for table, column, kind in ADDED_COLUMNS:
        if (table, column) not in present:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _upgrade_idle_columns(con: Any) -> None:
    """Add the idle attribution columns (issue 15) to ``device_metrics`` and to the ``gap_rows`` fields.

    Rows already stored keep NULL there until ``traceforge reanalyze`` recomputes them (their
    ``metric_version`` is older than ``METRIC_VERSION``).
    """
    _upgrade_graph_columns(con)
    _add_row_fields(con, "gap_rows", IDLE_COLUMNS)


def _add_row_fields(con: Any, table: str, added: tuple[str, ...]) -> None:
    """Rewrite a packed row table (``ROW_FIELDS``) whose rows lack the fields ``added``: NULL there.

    Nothing is done when the table is absent or already has them.
    """
    row = con.execute(
        bind(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ? AND column_name = ?",
            [STORAGE_SCHEMA, table, ROW_COLUMN],
        ),
    ).fetchone()
    if row is None or f"{added[0]} " in str(row[0]):
        return
    old = f"_tf_{table}_before_{added[0]}"
    con.execute(f"ALTER TABLE {STORAGE_SCHEMA}.{table} RENAME TO {old}")
    con.execute(STORAGE_DDL[table])
    kinds = dict(ROW_FIELDS[table])
    kept = ", ".join(
        f"NULL::{kinds[name]} AS {name}" if name in added else f"{ROW_COLUMN}.{name} AS {name}"
        for name, _kind in ROW_FIELDS[table]
    )
    insert_storage_rows(con, table, f"SELECT {kept} FROM {STORAGE_SCHEMA}.{old}")
    con.execute(f"DROP TABLE {STORAGE_SCHEMA}.{old}")


def _upgrade_launch_split(con: Any) -> None:
    """Add the launch split (issue 16): ``api_end_ns`` to the ``kernel_rows`` fields, and its columns.

    Kernels stored before keep NULL there (their calls' ends were not kept: re-ingest with ``--force``);
    the derived columns stay NULL until ``traceforge reanalyze`` (their ``metric_version`` is older).
    """
    _upgrade_graph_columns(con)
    _add_row_fields(con, "kernel_rows", ("api_end_ns",))


#: version -> the step that upgrades a store of the version before it (in place, in the caller's
#: transaction, after the current tables were created if missing).
LAYOUT_UPGRADES: dict[int, Callable[[Any], None]] = {
    2: _upgrade_spelled_out_tables,
    3: _upgrade_plain_row_tables,
    4: _upgrade_graph_columns,
    5: _upgrade_idle_columns,
    6: _upgrade_launch_split,
}


def upgrade_layout(con: Any, version: int) -> None:
    """Upgrade a store of layout ``version`` to ``LAYOUT_VERSION`` (each step newer than it, in order).

    Version 0 means unknown (a store written before versions were recorded): every step runs, and each
    changes only what it finds in the old shape.
    """
    for step in sorted(LAYOUT_UPGRADES):
        if step > version:
            LAYOUT_UPGRADES[step](con)
