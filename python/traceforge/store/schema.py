"""DDL of the public SQL schema (documented in docs/schema.md).

The table and column names here are a public contract: users' queries depend on them.
Add columns freely; never rename or drop one.
"""

from __future__ import annotations

#: Version of the metric code; bump when a derived-metric definition changes so
#: ``traceforge reanalyze`` knows which rows are stale.
METRIC_VERSION = 4

#: Tables holding one trace's rows, in the order they are written.
TRACE_TABLES: tuple[str, ...] = (
    "devices",
    "processes",
    "threads",
    "kernels",
    "memops",
    "graph_launches",
    "api_calls",
    "sync_events",
    "nvtx_ranges",
    "device_metrics",
    "stream_metrics",
    "concurrency_levels",
    "gaps",
    "kernel_summary",
    "memop_summary",
    "graph_summary",
    "nvtx_projection",
    "gil_intervals",
    "thread_gil",
    "os_calls",
    "os_call_summary",
    "gpu_metrics",
    "gpu_metric_summary",
    "nvtx_gpu_metrics",
)

#: Derived tables that ``reanalyze`` recomputes from the event tables.
DERIVED_TABLES: tuple[str, ...] = (
    "device_metrics",
    "stream_metrics",
    "concurrency_levels",
    "gaps",
    "kernel_summary",
    "memop_summary",
    "graph_summary",
    "nvtx_projection",
    "gpu_metric_summary",
    "nvtx_gpu_metrics",
)

_KERNEL_METRIC_COLUMNS = """
    kernel_count BIGINT,
    kernel_time_ns BIGINT,
    span_ns BIGINT,
    first_start_ns BIGINT,
    last_end_ns BIGINT,
    busy_ns BIGINT,
    utilization DOUBLE,
    max_concurrency INTEGER,
    overlap_ns BIGINT,
    gap_count BIGINT,
    gap_total_ns BIGINT,
    gap_p50_ns DOUBLE,
    gap_p90_ns DOUBLE,
    gap_p99_ns DOUBLE,
    gap_max_ns BIGINT,
    memcpy_count BIGINT,
    memcpy_ns BIGINT,
    memcpy_bytes BIGINT,
    memset_count BIGINT,
    memset_ns BIGINT,
    memset_bytes BIGINT,
    launch_latency_p50_ns DOUBLE,
    launch_latency_p90_ns DOUBLE,
    launch_latency_p99_ns DOUBLE,
    launch_matched BIGINT,
    stream_count INTEGER,
    metric_version INTEGER,
    graph_launch_count BIGINT,
    graph_ns BIGINT
"""

#: The idle-gap attribution columns (issue 15) of ``device_metrics`` and ``gaps``: they sum to the gap time.
IDLE_COLUMNS: tuple[str, ...] = (
    "idle_sync_ns",
    "idle_gil_wait_ns",
    "idle_os_ns",
    "idle_cuda_api_ns",
    "idle_other_ns",
    "idle_unattributed_ns",
)

_IDLE_COLUMN_DDL = ", ".join(f"{c} BIGINT" for c in IDLE_COLUMNS)

#: The kernels' launch split (issue 16; `nsys stats --report kernexecsum`) in ``device_metrics`` and
#: ``stream_metrics``: percentiles of the launching calls' durations (API time), and the count and
#: percentiles of the queue times (kernel start - call end, where >= 0).
LAUNCH_SPLIT_METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("launch_api_p50_ns", "DOUBLE"),
    ("launch_api_p90_ns", "DOUBLE"),
    ("launch_api_p99_ns", "DOUBLE"),
    ("launch_queue_count", "BIGINT"),
    ("launch_queue_p50_ns", "DOUBLE"),
    ("launch_queue_p90_ns", "DOUBLE"),
    ("launch_queue_p99_ns", "DOUBLE"),
)

#: The launch split per kernel name in ``kernel_summary``: kernels whose launching call is known, the
#: calls' mean and median duration, kernels with a queue time and its mean and median over them.
LAUNCH_SPLIT_SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("launched_count", "BIGINT"),
    ("api_avg_ns", "DOUBLE"),
    ("api_median_ns", "DOUBLE"),
    ("queue_count", "BIGINT"),
    ("queue_avg_ns", "DOUBLE"),
    ("queue_median_ns", "DOUBLE"),
)

_LAUNCH_SPLIT_METRIC_DDL = ", ".join(f"{c} {kind}" for c, kind in LAUNCH_SPLIT_METRIC_COLUMNS)
_LAUNCH_SPLIT_SUMMARY_DDL = ", ".join(f"{c} {kind}" for c, kind in LAUNCH_SPLIT_SUMMARY_COLUMNS)

#: Columns added to existing tables after their first release (CUDA graphs, issue 21; idle attribution,
#: issue 15; launch split, issue 16), in the order they were added: new stores declare them last, as the
#: upgrade of an older store appends them (``storage._upgrade_graph_columns``,
#: ``storage._upgrade_idle_columns``, ``storage._upgrade_launch_split``).
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("traces", "cuda_graph_trace", "VARCHAR"),
    ("device_metrics", "graph_launch_count", "BIGINT"),
    ("device_metrics", "graph_ns", "BIGINT"),
    ("stream_metrics", "graph_launch_count", "BIGINT"),
    ("stream_metrics", "graph_ns", "BIGINT"),
    ("nvtx_projection", "graph_ns", "BIGINT"),
    *(("device_metrics", c, "BIGINT") for c in IDLE_COLUMNS),
    *(("device_metrics", c, kind) for c, kind in LAUNCH_SPLIT_METRIC_COLUMNS),
    *(("stream_metrics", c, kind) for c, kind in LAUNCH_SPLIT_METRIC_COLUMNS),
    *(("kernel_summary", c, kind) for c, kind in LAUNCH_SPLIT_SUMMARY_COLUMNS),
)

DDL: dict[str, str] = {
    "traces": """
        CREATE TABLE IF NOT EXISTS traces (
            trace_id VARCHAR PRIMARY KEY,
            source_path VARCHAR,
            export_path VARCHAR,
            fingerprint VARCHAR,
            file_size_bytes BIGINT,
            nsys_version VARCHAR,
            schema_version VARCHAR,
            capture_start_utc_ns BIGINT,
            capture_start_utc TIMESTAMP,
            trace_start_ns BIGINT,
            trace_end_ns BIGINT,
            gpu_count INTEGER,
            gpus VARCHAR,
            kernel_count BIGINT,
            memop_count BIGINT,
            api_call_count BIGINT,
            nvtx_count BIGINT,
            tables_present VARCHAR,
            traceforge_version VARCHAR,
            metric_version INTEGER,
            ingested_at TIMESTAMP,
            cuda_graph_trace VARCHAR
        )""",
    "devices": """
        CREATE TABLE IF NOT EXISTS devices (
            trace_id VARCHAR, device_id INTEGER, name VARCHAR, chip_name VARCHAR, bus_location VARCHAR,
            uuid VARCHAR, sm_count INTEGER, total_memory_bytes BIGINT, memory_bandwidth_bytes_per_s BIGINT,
            clock_rate_hz BIGINT, compute_capability VARCHAR, cuda_device INTEGER
        )""",
    "processes": "CREATE TABLE IF NOT EXISTS processes (trace_id VARCHAR, pid BIGINT, name VARCHAR)",
    "threads": "CREATE TABLE IF NOT EXISTS threads (trace_id VARCHAR, pid BIGINT, tid BIGINT, name VARCHAR)",
    "kernels": """
        CREATE TABLE IF NOT EXISTS kernels (
            trace_id VARCHAR, device_id INTEGER, context_id BIGINT, stream_id BIGINT, pid BIGINT,
            correlation_id BIGINT, start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT, name VARCHAR,
            short_name VARCHAR, grid_x INTEGER, grid_y INTEGER, grid_z INTEGER, block_x INTEGER,
            block_y INTEGER, block_z INTEGER, registers_per_thread INTEGER, static_shared_bytes BIGINT,
            dynamic_shared_bytes BIGINT, graph_node_id BIGINT, launch_tid BIGINT, launch_api VARCHAR,
            api_start_ns BIGINT, launch_latency_ns BIGINT, api_end_ns BIGINT, api_ns BIGINT, queue_ns BIGINT
        )""",
    "memops": """
        CREATE TABLE IF NOT EXISTS memops (
            trace_id VARCHAR, device_id INTEGER, stream_id BIGINT, pid BIGINT, correlation_id BIGINT,
            start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT, op VARCHAR, copy_kind VARCHAR, bytes BIGINT,
            bandwidth_gbps DOUBLE, launch_tid BIGINT, api_start_ns BIGINT
        )""",
    "graph_launches": """
        CREATE TABLE IF NOT EXISTS graph_launches (
            trace_id VARCHAR, device_id INTEGER, stream_id BIGINT, graph_id BIGINT, graph_exec_id BIGINT,
            start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT, pid BIGINT, correlation_id BIGINT,
            launch_tid BIGINT, api_start_ns BIGINT, launch_latency_ns BIGINT, kernel_count BIGINT,
            kernel_ns BIGINT
        )""",
    "api_calls": """
        CREATE TABLE IF NOT EXISTS api_calls (
            trace_id VARCHAR, pid BIGINT, tid BIGINT, correlation_id BIGINT, start_ns BIGINT, end_ns BIGINT,
            duration_ns BIGINT, name VARCHAR, api ENUM('runtime', 'driver'), return_value BIGINT
        )""",
    "sync_events": """
        CREATE TABLE IF NOT EXISTS sync_events (
            trace_id VARCHAR, device_id INTEGER, stream_id BIGINT, pid BIGINT, correlation_id BIGINT,
            start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT, sync_type VARCHAR
        )""",
    "nvtx_ranges": """
        CREATE TABLE IF NOT EXISTS nvtx_ranges (
            trace_id VARCHAR, range_index BIGINT, pid BIGINT, tid BIGINT, start_ns BIGINT, end_ns BIGINT,
            duration_ns BIGINT, name VARCHAR, domain VARCHAR, kind VARCHAR, level INTEGER
        )""",
    "device_metrics": f"""
        CREATE TABLE IF NOT EXISTS device_metrics (
            trace_id VARCHAR, device_id INTEGER, {_KERNEL_METRIC_COLUMNS}, {_IDLE_COLUMN_DDL},
            {_LAUNCH_SPLIT_METRIC_DDL}
        )""",
    "stream_metrics": f"""
        CREATE TABLE IF NOT EXISTS stream_metrics (
            trace_id VARCHAR, device_id INTEGER, stream_id BIGINT, {_KERNEL_METRIC_COLUMNS},
            {_LAUNCH_SPLIT_METRIC_DDL}
        )""",
    "concurrency_levels": """
        CREATE TABLE IF NOT EXISTS concurrency_levels (
            trace_id VARCHAR, device_id INTEGER, level INTEGER, time_ns BIGINT, metric_version INTEGER
        )""",
    "gaps": f"""
        CREATE TABLE IF NOT EXISTS gaps (
            trace_id VARCHAR, device_id INTEGER, start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT,
            metric_version INTEGER, {_IDLE_COLUMN_DDL}
        )""",
    "kernel_summary": f"""
        CREATE TABLE IF NOT EXISTS kernel_summary (
            trace_id VARCHAR, device_id INTEGER, name VARCHAR, count BIGINT, total_ns BIGINT, avg_ns DOUBLE,
            median_ns DOUBLE, min_ns BIGINT, max_ns BIGINT, stddev_ns DOUBLE, share DOUBLE,
            metric_version INTEGER, {_LAUNCH_SPLIT_SUMMARY_DDL}
        )""",
    "memop_summary": """
        CREATE TABLE IF NOT EXISTS memop_summary (
            trace_id VARCHAR, device_id INTEGER, op VARCHAR, copy_kind VARCHAR, count BIGINT, total_ns BIGINT,
            total_bytes BIGINT, avg_ns DOUBLE, min_ns BIGINT, max_ns BIGINT, bandwidth_gbps DOUBLE,
            metric_version INTEGER
        )""",
    "graph_summary": """
        CREATE TABLE IF NOT EXISTS graph_summary (
            trace_id VARCHAR, device_id INTEGER, graph_id BIGINT, count BIGINT, total_ns BIGINT,
            avg_ns DOUBLE, median_ns DOUBLE, min_ns BIGINT, max_ns BIGINT, metric_version INTEGER
        )""",
    "nvtx_projection": """
        CREATE TABLE IF NOT EXISTS nvtx_projection (
            trace_id VARCHAR, range_index BIGINT, name VARCHAR, domain VARCHAR, pid BIGINT, tid BIGINT,
            start_ns BIGINT, end_ns BIGINT, level INTEGER, gpu_start_ns BIGINT, gpu_end_ns BIGINT,
            gpu_op_count BIGINT, launch_count BIGINT, kernel_count BIGINT, kernel_time_ns BIGINT,
            metric_version INTEGER, graph_ns BIGINT
        )""",
    # Host-side evidence (issue 15). GIL ranges are stored here, not in nvtx_ranges / nvtx_projection,
    # which keep the user's ranges only. `gil_intervals` and `os_calls` are views over tf_store.
    "gil_intervals": """
        CREATE TABLE IF NOT EXISTS gil_intervals (
            trace_id VARCHAR, pid BIGINT, tid BIGINT, state VARCHAR, start_ns BIGINT, end_ns BIGINT
        )""",
    "thread_gil": """
        CREATE TABLE IF NOT EXISTS thread_gil (
            trace_id VARCHAR, pid BIGINT, tid BIGINT, name VARCHAR, gil_hold_ns BIGINT, gil_wait_ns BIGINT,
            gil_wait_count BIGINT, gil_wait_p50_ns DOUBLE, gil_wait_p99_ns DOUBLE, gil_wait_max_ns BIGINT
        )""",
    "os_calls": """
        CREATE TABLE IF NOT EXISTS os_calls (
            trace_id VARCHAR, pid BIGINT, tid BIGINT, name VARCHAR, start_ns BIGINT, end_ns BIGINT
        )""",
    "os_call_summary": """
        CREATE TABLE IF NOT EXISTS os_call_summary (
            trace_id VARCHAR, name VARCHAR, count BIGINT, total_ns BIGINT, avg_ns DOUBLE, median_ns DOUBLE,
            min_ns BIGINT, max_ns BIGINT
        )""",
    "gpu_metrics": """
        CREATE TABLE IF NOT EXISTS gpu_metrics (
            trace_id VARCHAR, device_id INTEGER, metric VARCHAR, ts_ns BIGINT, value BIGINT
        )""",
    "gpu_metric_summary": """
        CREATE TABLE IF NOT EXISTS gpu_metric_summary (
            trace_id VARCHAR, device_id INTEGER, metric VARCHAR, sample_count BIGINT, mean DOUBLE, min BIGINT,
            max BIGINT, p50 DOUBLE, p90 DOUBLE, p99 DOUBLE, metric_version INTEGER
        )""",
    "nvtx_gpu_metrics": """
        CREATE TABLE IF NOT EXISTS nvtx_gpu_metrics (
            trace_id VARCHAR, "range" BIGINT, metric VARCHAR, mean DOUBLE, samples BIGINT,
            metric_version INTEGER
        )""",
    "ingest_failures": """
        CREATE TABLE IF NOT EXISTS ingest_failures (
            path VARCHAR, fingerprint VARCHAR, error_code VARCHAR, message VARCHAR, failed_at TIMESTAMP
        )""",
}

# --- Storage behind the largest tables ------------------------------------------------------------------
#
# ``kernels``, ``api_calls``, ``gaps`` and ``gpu_metrics`` are views. Their rows are stored normalised in the
# ``tf_store`` schema: a kernel row keeps its times, correlation id and a 4-byte ``kernel_class`` id in place
# of the columns that repeat across launches (~250 bytes of names, launch shape, device, stream, thread), an
# API call a ``call_class`` id likewise, a GPU metric sample a ``metric_class`` id in place of its name,
# and all of them a numeric ``trace_key`` in place of the trace id.
# DuckDB spends most of an ingest on strings and per-value work, so this stores a trace several times
# faster than the spelled-out rows; the views give back exactly the documented columns, order and types.

#: Schema holding the storage tables (not part of the public contract: query the views).
STORAGE_SCHEMA = "tf_store"

#: ``trace_key`` of a trace id in SQL: the id is 16 hex digits of the content fingerprint.
TRACE_KEY_SQL = "('0x' || {})::UBIGINT"

#: Rows of the three large storage tables, field by field. Each row is stored as one STRUCT column
#: (``ROW_COLUMN``) rather than as plain columns: DuckDB keeps a HyperLogLog distinct-count sketch of every
#: plain column and updates it for each inserted value (a quarter of its insert time here), but keeps none
#: for STRUCT columns. Zone maps still cover the fields, so filters on them skip row groups as before.
ROW_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "kernel_rows": (
        ("trace_key", "UBIGINT"),
        ("correlation_id", "BIGINT"),
        ("start_ns", "BIGINT"),
        ("end_ns", "BIGINT"),
        ("kernel_class", "INTEGER"),
        ("api_start_ns", "BIGINT"),
        # The launching call's end (layout 6): API time and queue time of the launch.
        ("api_end_ns", "BIGINT"),
    ),
    "api_call_rows": (
        ("trace_key", "UBIGINT"),
        ("correlation_id", "BIGINT"),
        ("start_ns", "BIGINT"),
        ("end_ns", "BIGINT"),
        ("call_class", "INTEGER"),
    ),
    "gap_rows": (
        ("trace_key", "UBIGINT"),
        ("device_id", "INTEGER"),
        ("start_ns", "BIGINT"),
        ("end_ns", "BIGINT"),
        ("metric_version", "INTEGER"),
        *((c, "BIGINT") for c in IDLE_COLUMNS),
    ),
    # state: 0 = hold, 1 = wait (the view spells it out)
    "gil_rows": (
        ("trace_key", "UBIGINT"),
        ("pid", "BIGINT"),
        ("tid", "BIGINT"),
        ("state", "TINYINT"),
        ("start_ns", "BIGINT"),
        ("end_ns", "BIGINT"),
    ),
    # name_id: into os_call_names (one name per distinct call name of the trace)
    "os_call_rows": (
        ("trace_key", "UBIGINT"),
        ("pid", "BIGINT"),
        ("tid", "BIGINT"),
        ("name_id", "INTEGER"),
        ("start_ns", "BIGINT"),
        ("end_ns", "BIGINT"),
    ),
    "gpu_metric_rows": (
        ("trace_key", "UBIGINT"),
        ("device_id", "INTEGER"),
        ("metric_class", "INTEGER"),
        ("ts_ns", "BIGINT"),
        ("value", "BIGINT"),
    ),
}

#: The one column of a ``ROW_FIELDS`` table.
ROW_COLUMN = "fields"


def _row_table_ddl(table: str) -> str:
    fields = ", ".join(f"{name} {kind}" for name, kind in ROW_FIELDS[table])
    return f"CREATE TABLE IF NOT EXISTS {STORAGE_SCHEMA}.{table} ({ROW_COLUMN} STRUCT({fields}))"


def pack_row_fields(table: str) -> str:
    """The SELECT list that packs flat columns named like ``table``'s fields into its row column."""
    fields = ", ".join(f"{name} := {name}" for name, _kind in ROW_FIELDS[table])
    return f"struct_pack({fields}) AS {ROW_COLUMN}"


def unpacked_rows(table: str) -> str:
    """A subquery giving the rows of ``table`` (a storage table) as flat columns."""
    if table not in ROW_FIELDS:
        return f"{STORAGE_SCHEMA}.{table}"
    fields = ", ".join(f"{ROW_COLUMN}.{name} AS {name}" for name, _kind in ROW_FIELDS[table])
    return f"(SELECT {fields} FROM {STORAGE_SCHEMA}.{table})"


def storage_trace_key(table: str) -> str:
    """The expression for the trace key of a storage table's row."""
    return f"{ROW_COLUMN}.trace_key" if table in ROW_FIELDS else "trace_key"


#: Storage tables: DDL, and the identity columns each one takes from its trace when rows are written.
STORAGE_DDL: dict[str, str] = {
    "kernel_rows": _row_table_ddl("kernel_rows"),
    "kernel_classes": f"""
        CREATE TABLE IF NOT EXISTS {STORAGE_SCHEMA}.kernel_classes (
            trace_key UBIGINT, kernel_class INTEGER, trace_id VARCHAR, device_id INTEGER, context_id BIGINT,
            stream_id BIGINT, pid BIGINT, name VARCHAR, short_name VARCHAR, grid_x INTEGER, grid_y INTEGER,
            grid_z INTEGER, block_x INTEGER, block_y INTEGER, block_z INTEGER, registers_per_thread INTEGER,
            static_shared_bytes BIGINT, dynamic_shared_bytes BIGINT, graph_node_id BIGINT, launch_tid BIGINT,
            launch_api VARCHAR
        )""",
    "api_call_rows": _row_table_ddl("api_call_rows"),
    "api_call_classes": f"""
        CREATE TABLE IF NOT EXISTS {STORAGE_SCHEMA}.api_call_classes (
            trace_key UBIGINT, call_class INTEGER, trace_id VARCHAR, pid BIGINT, tid BIGINT, name VARCHAR,
            api ENUM('runtime', 'driver'), return_value BIGINT
        )""",
    "gap_rows": _row_table_ddl("gap_rows"),
    "gil_rows": _row_table_ddl("gil_rows"),
    "os_call_rows": _row_table_ddl("os_call_rows"),
    "os_call_names": f"""
        CREATE TABLE IF NOT EXISTS {STORAGE_SCHEMA}.os_call_names (
            trace_key UBIGINT, trace_id VARCHAR, name_id INTEGER, name VARCHAR
        )""",
    "gpu_metric_rows": _row_table_ddl("gpu_metric_rows"),
    "gpu_metric_classes": f"""
        CREATE TABLE IF NOT EXISTS {STORAGE_SCHEMA}.gpu_metric_classes (
            trace_key UBIGINT, metric_class INTEGER, trace_id VARCHAR, metric VARCHAR
        )""",
}

#: Which identity columns (``trace_key``, ``trace_id``) each storage table holds.
STORAGE_IDENTITY: dict[str, tuple[str, ...]] = {
    "kernel_rows": ("trace_key",),
    "kernel_classes": ("trace_key", "trace_id"),
    "api_call_rows": ("trace_key",),
    "api_call_classes": ("trace_key", "trace_id"),
    "gap_rows": ("trace_key", "metric_version"),
    "gil_rows": ("trace_key",),
    "os_call_rows": ("trace_key",),
    "os_call_names": ("trace_key", "trace_id"),
    "gpu_metric_rows": ("trace_key",),
    "gpu_metric_classes": ("trace_key", "trace_id"),
}

#: The storage table a derived table is written to, where it is not written as itself.
DERIVED_STORAGE: dict[str, str] = {"gaps": "gap_rows"}

#: Class columns of a kernel: the columns of ``kernels`` that repeat across a trace's launches, held
#: once per distinct combination in ``kernel_classes``.
KERNEL_CLASS_COLUMNS: tuple[str, ...] = (
    "device_id",
    "context_id",
    "stream_id",
    "pid",
    "name",
    "short_name",
    "grid_x",
    "grid_y",
    "grid_z",
    "block_x",
    "block_y",
    "block_z",
    "registers_per_thread",
    "static_shared_bytes",
    "dynamic_shared_bytes",
    "graph_node_id",
    "launch_tid",
    "launch_api",
)

#: Class columns of an API call, held once per distinct combination in ``api_call_classes``.
API_CLASS_COLUMNS: tuple[str, ...] = ("pid", "tid", "name", "api", "return_value")

#: Class columns of a GPU metric sample: its metric name, held once per trace in ``gpu_metric_classes``.
GPU_METRIC_CLASS_COLUMNS: tuple[str, ...] = ("metric",)

#: The public views over the storage tables (same columns, order and types as ``DDL``'s tables).
VIEW_DDL: dict[str, str] = {
    "kernels": f"""
        CREATE OR REPLACE VIEW kernels AS
        SELECT c.trace_id, c.device_id, c.context_id, c.stream_id, c.pid, k.correlation_id, k.start_ns,
            k.end_ns, k.end_ns - k.start_ns AS duration_ns, c.name, c.short_name,
            c.grid_x, c.grid_y, c.grid_z, c.block_x, c.block_y, c.block_z,
            c.registers_per_thread, c.static_shared_bytes, c.dynamic_shared_bytes,
            c.graph_node_id, c.launch_tid, c.launch_api, k.api_start_ns,
            k.start_ns - k.api_start_ns AS launch_latency_ns, k.api_end_ns,
            k.api_end_ns - k.api_start_ns AS api_ns,
            -- nsys kernexecsum's queue time: only where the kernel starts after its call returned
            CASE WHEN k.start_ns >= k.api_end_ns THEN k.start_ns - k.api_end_ns END AS queue_ns
        FROM {unpacked_rows("kernel_rows")} k
        JOIN {STORAGE_SCHEMA}.kernel_classes c
            ON k.trace_key = c.trace_key AND k.kernel_class = c.kernel_class""",
    "api_calls": f"""
        CREATE OR REPLACE VIEW api_calls AS
        SELECT c.trace_id, c.pid, c.tid, a.correlation_id, a.start_ns, a.end_ns,
            a.end_ns - a.start_ns AS duration_ns, c.name, c.api, c.return_value
        FROM {unpacked_rows("api_call_rows")} a
        JOIN {STORAGE_SCHEMA}.api_call_classes c
            ON a.trace_key = c.trace_key AND a.call_class = c.call_class""",
    # Tens of millions of samples a capture: each row is (trace key, device, metric id, time, value).
    "gpu_metrics": f"""
        CREATE OR REPLACE VIEW gpu_metrics AS
        SELECT c.trace_id, g.device_id, c.metric, g.ts_ns, g.value
        FROM {unpacked_rows("gpu_metric_rows")} g
        JOIN {STORAGE_SCHEMA}.gpu_metric_classes c
            ON g.trace_key = c.trace_key AND g.metric_class = c.metric_class""",
    # A gap has no name to carry the trace id: it comes from `traces` (one row per trace).
    "gaps": f"""
        CREATE OR REPLACE VIEW gaps AS
        SELECT t.trace_id, g.device_id, g.start_ns, g.end_ns, g.end_ns - g.start_ns AS duration_ns,
            g.metric_version, {", ".join(f"g.{c}" for c in IDLE_COLUMNS)}
        FROM {unpacked_rows("gap_rows")} g
        JOIN traces t ON g.trace_key = TRY_CAST('0x' || t.trace_id AS UBIGINT)""",
    "gil_intervals": f"""
        CREATE OR REPLACE VIEW gil_intervals AS
        SELECT t.trace_id, g.pid, g.tid, CASE g.state WHEN 0 THEN 'hold' WHEN 1 THEN 'wait' END AS state,
            g.start_ns, g.end_ns
        FROM {unpacked_rows("gil_rows")} g
        JOIN traces t ON g.trace_key = TRY_CAST('0x' || t.trace_id AS UBIGINT)""",
    "os_calls": f"""
        CREATE OR REPLACE VIEW os_calls AS
        SELECT n.trace_id, o.pid, o.tid, n.name, o.start_ns, o.end_ns
        FROM {unpacked_rows("os_call_rows")} o
        JOIN {STORAGE_SCHEMA}.os_call_names n ON o.trace_key = n.trace_key AND o.name_id = n.name_id""",
}


def trace_key(trace_id: str) -> int:
    """The numeric ``trace_key`` of a trace id (its 16 hex digits as an unsigned 64-bit integer)."""
    return int(trace_id, 16)
