"""DDL of the public SQL schema (documented in docs/schema.md).

The table and column names here are a public contract: users' queries depend on them.
Add columns freely; never rename or drop one.
"""

from __future__ import annotations

#: Version of the metric code; bump when a derived-metric definition changes so
#: ``traceforge reanalyze`` knows which rows are stale.
METRIC_VERSION = 1

#: Tables holding one trace's rows, in the order they are written.
TRACE_TABLES: tuple[str, ...] = (
    "devices",
    "processes",
    "threads",
    "kernels",
    "memops",
    "api_calls",
    "sync_events",
    "nvtx_ranges",
    "device_metrics",
    "stream_metrics",
    "concurrency_levels",
    "gaps",
    "kernel_summary",
    "memop_summary",
    "nvtx_projection",
)

#: Derived tables that ``reanalyze`` recomputes from the event tables.
DERIVED_TABLES: tuple[str, ...] = (
    "device_metrics",
    "stream_metrics",
    "concurrency_levels",
    "gaps",
    "kernel_summary",
    "memop_summary",
    "nvtx_projection",
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
    metric_version INTEGER
"""

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
            ingested_at TIMESTAMP
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
            api_start_ns BIGINT, launch_latency_ns BIGINT
        )""",
    "memops": """
        CREATE TABLE IF NOT EXISTS memops (
            trace_id VARCHAR, device_id INTEGER, stream_id BIGINT, pid BIGINT, correlation_id BIGINT,
            start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT, op VARCHAR, copy_kind VARCHAR, bytes BIGINT,
            bandwidth_gbps DOUBLE, launch_tid BIGINT, api_start_ns BIGINT
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
            trace_id VARCHAR, device_id INTEGER, {_KERNEL_METRIC_COLUMNS}
        )""",
    "stream_metrics": f"""
        CREATE TABLE IF NOT EXISTS stream_metrics (
            trace_id VARCHAR, device_id INTEGER, stream_id BIGINT, {_KERNEL_METRIC_COLUMNS}
        )""",
    "concurrency_levels": """
        CREATE TABLE IF NOT EXISTS concurrency_levels (
            trace_id VARCHAR, device_id INTEGER, level INTEGER, time_ns BIGINT, metric_version INTEGER
        )""",
    "gaps": """
        CREATE TABLE IF NOT EXISTS gaps (
            trace_id VARCHAR, device_id INTEGER, start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT,
            metric_version INTEGER
        )""",
    "kernel_summary": """
        CREATE TABLE IF NOT EXISTS kernel_summary (
            trace_id VARCHAR, device_id INTEGER, name VARCHAR, count BIGINT, total_ns BIGINT, avg_ns DOUBLE,
            median_ns DOUBLE, min_ns BIGINT, max_ns BIGINT, stddev_ns DOUBLE, share DOUBLE,
            metric_version INTEGER
        )""",
    "memop_summary": """
        CREATE TABLE IF NOT EXISTS memop_summary (
            trace_id VARCHAR, device_id INTEGER, op VARCHAR, copy_kind VARCHAR, count BIGINT, total_ns BIGINT,
            total_bytes BIGINT, avg_ns DOUBLE, min_ns BIGINT, max_ns BIGINT, bandwidth_gbps DOUBLE,
            metric_version INTEGER
        )""",
    "nvtx_projection": """
        CREATE TABLE IF NOT EXISTS nvtx_projection (
            trace_id VARCHAR, range_index BIGINT, name VARCHAR, domain VARCHAR, pid BIGINT, tid BIGINT,
            start_ns BIGINT, end_ns BIGINT, level INTEGER, gpu_start_ns BIGINT, gpu_end_ns BIGINT,
            gpu_op_count BIGINT, launch_count BIGINT, kernel_count BIGINT, kernel_time_ns BIGINT,
            metric_version INTEGER
        )""",
    "ingest_failures": """
        CREATE TABLE IF NOT EXISTS ingest_failures (
            path VARCHAR, fingerprint VARCHAR, error_code VARCHAR, message VARCHAR, failed_at TIMESTAMP
        )""",
}
