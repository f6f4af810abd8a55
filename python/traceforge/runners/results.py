"""Runner result tables (runs, cells, requests, telemetry, ncu_metrics) and per-cell sweep summaries.

The table and column names are a public contract (see ``docs/runners.md``): add columns freely, never rename
or drop one. Rows are written as they are produced (one request, one cell at a time), so a killed sweep loses
nothing already recorded. This module imports only ``duckdb`` and the standard library: it runs on machines
without polars or pyarrow (the GPU machine).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..store.sql_params import bind

#: DuckDB type of every column, per table, in table order. Used both for the DDL and for bulk inserts.
COLUMNS: dict[str, dict[str, str]] = {
    "runs": {
        "run_id": "VARCHAR",
        "name": "VARCHAR",
        "backend": "VARCHAR",
        "model": "VARCHAR",
        "spec_toml": "VARCHAR",
        "spec_path": "VARCHAR",
        "started_at": "TIMESTAMP",
        "finished_at": "TIMESTAMP",
        "status": "VARCHAR",
        "host": "VARCHAR",
        "manifest_json": "VARCHAR",
    },
    "cells": {
        "cell_id": "VARCHAR",
        "run_id": "VARCHAR",
        "backend": "VARCHAR",
        "model": "VARCHAR",
        "workload": "VARCHAR",
        "n": "INTEGER",
        "repetition": "INTEGER",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "started_at": "TIMESTAMP",
        "finished_at": "TIMESTAMP",
        "wall_s": "DOUBLE",
        "trace_id": "VARCHAR",
        "trace_path": "VARCHAR",
        "requests_planned": "INTEGER",
        "requests_ok": "INTEGER",
        "requests_failed": "INTEGER",
        "max_new_tokens": "INTEGER",
        "agent_mode": "VARCHAR",
        "ncu_status": "VARCHAR",
        "api": "VARCHAR",
        "server": "VARCHAR",
        "prompt_tokens": "INTEGER",
        "base_url": "VARCHAR",
    },
    "requests": {
        "request_id": "VARCHAR",
        "cell_id": "VARCHAR",
        "run_id": "VARCHAR",
        "agent": "INTEGER",
        "request_index": "INTEGER",
        "status": "VARCHAR",
        "error": "VARCHAR",
        "start_s": "DOUBLE",
        "wall_ms": "DOUBLE",
        "ttft_ms": "DOUBLE",
        "prompt_tokens": "INTEGER",
        "output_tokens": "INTEGER",
        "tokens_per_s": "DOUBLE",
        "decode_tokens_per_s": "DOUBLE",
        "eval_count": "INTEGER",
        "eval_duration_ns": "BIGINT",
        "prompt_eval_count": "INTEGER",
        "prompt_eval_duration_ns": "BIGINT",
        "finish_reason": "VARCHAR",
        "nvtx_range": "VARCHAR",
    },
    "telemetry": {
        "run_id": "VARCHAR",
        "cell_id": "VARCHAR",
        "t_s": "DOUBLE",
        "gpu_index": "INTEGER",
        "power_w": "DOUBLE",
        "temperature_c": "DOUBLE",
        "sm_clock_mhz": "DOUBLE",
        "mem_clock_mhz": "DOUBLE",
        "gpu_util_pct": "DOUBLE",
        "mem_util_pct": "DOUBLE",
        "mem_used_bytes": "BIGINT",
        "available": "BOOLEAN",
        "note": "VARCHAR",
    },
    "ncu_metrics": {
        "source_path": "VARCHAR",
        "source_fingerprint": "VARCHAR",
        "page": "VARCHAR",
        "cell_id": "VARCHAR",
        "trace_id": "VARCHAR",
        "launch_id": "INTEGER",
        "process_id": "BIGINT",
        "process_name": "VARCHAR",
        "kernel_name": "VARCHAR",
        "kernel_short_name": "VARCHAR",
        "kernel_name_key": "VARCHAR",
        "context_id": "BIGINT",
        "stream_id": "BIGINT",
        "device_id": "INTEGER",
        "block_size": "VARCHAR",
        "grid_size": "VARCHAR",
        "section": "VARCHAR",
        "metric": "VARCHAR",
        "unit": "VARCHAR",
        "value": "DOUBLE",
        "value_text": "VARCHAR",
        "missing": "BOOLEAN",
        "ingested_at": "TIMESTAMP",
    },
}

#: The ``cells`` columns that make one configuration (one scaling curve); sweeps group by all of them.
CONFIG_COLUMNS = (
    "backend",
    "model",
    "server",
    "workload",
    "api",
    "max_new_tokens",
    "prompt_tokens",
    "base_url",
)

#: Cell statuses; only ``ok`` cells enter throughput summaries, ``skipped`` cells never have request rows.
CELL_STATUSES = ("running", "ok", "failed", "hung", "timeout", "skipped")

# Regular expressions (RE2 syntax, shared with Python's re) that reduce a demangled kernel name to a key on
# which nsys and ncu agree: ncu drops some namespace qualifiers (``at::native::`` -> ``at::``) and the casts
# nsys prints on integral template arguments (``(int)4`` -> ``4``).
KEY_CAST_RE = (
    r"\((?:unsigned |signed )?(?:int|long|long long|short|char|bool|unsigned|unsigned long)\)(-?[0-9])"
)
KEY_NAMESPACE_RE = r"(?:[A-Za-z_][A-Za-z0-9_]*|<unnamed>|\(anonymous namespace\))::"


def _ddl() -> dict[str, str]:
    ddl = {
        table: f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f"{name} {typ}" for name, typ in cols.items())
        + ")"
        for table, cols in COLUMNS.items()
    }
    # Older stores get the columns added since (the contract allows adding, never renaming).
    ddl["tf_kernel_key"] = (
        "CREATE OR REPLACE MACRO tf_kernel_key(name) AS "
        f"regexp_replace(regexp_replace(regexp_replace(name, '{KEY_CAST_RE}', '\\1', 'g'), "
        f"'{KEY_NAMESPACE_RE}', '', 'g'), '\\s+', ' ', 'g')"
    )
    ddl["cell_summary"] = CELL_SUMMARY_VIEW
    return ddl


#: Per-cell summary over ok requests. Throughputs in output tokens per second.
CELL_SUMMARY_VIEW = """
CREATE OR REPLACE VIEW cell_summary AS
WITH req AS (
    SELECT * FROM requests WHERE status = 'ok'
), per_agent AS (
    SELECT cell_id, agent, sum(output_tokens) / nullif(sum(wall_ms) / 1000.0, 0) AS agent_tps
    FROM req GROUP BY cell_id, agent
), agg AS (
    SELECT cell_id,
           count(*) AS ok_requests,
           sum(output_tokens) AS output_tokens,
           sum(output_tokens) / nullif(max(start_s + wall_ms / 1000.0) - min(start_s), 0) AS aggregate_tps,
           median(tokens_per_s) AS request_tps_p50,
           quantile_cont(wall_ms, 0.5) AS latency_p50_ms,
           quantile_cont(wall_ms, 0.95) AS latency_p95_ms,
           quantile_cont(ttft_ms, 0.5) AS ttft_p50_ms,
           quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms
    FROM req GROUP BY cell_id
)
SELECT c.run_id, c.cell_id, c.backend, c.model, c.workload, c.n, c.repetition, c.status, c.reason,
       c.api, c.server, c.max_new_tokens, c.prompt_tokens, c.base_url,
       c.trace_id, c.wall_s, c.requests_planned,
       coalesce(a.ok_requests, 0) AS ok_requests,
       coalesce(c.requests_failed, 0) AS failed_requests,
       a.output_tokens,
       (SELECT avg(agent_tps) FROM per_agent p WHERE p.cell_id = c.cell_id) AS per_agent_tps,
       a.aggregate_tps, a.request_tps_p50,
       a.latency_p50_ms, a.latency_p95_ms, a.ttft_p50_ms, a.ttft_p95_ms
FROM cells c LEFT JOIN agg a USING (cell_id)
"""

DDL: dict[str, str] = {}


def ensure_tables(con: Any) -> None:
    """Create the runner tables, the ``tf_kernel_key`` macro and the ``cell_summary`` view (idempotent)."""
    for table, cols in COLUMNS.items():
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            + ", ".join(f"{name} {typ}" for name, typ in cols.items())
            + ")"
        )
        present = {row[0] for row in con.execute(f"SELECT column_name FROM (DESCRIBE {table})").fetchall()}
        for name, typ in cols.items():
            if name not in present:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {typ}")
    for key in ("tf_kernel_key", "cell_summary"):
        con.execute(_ddl()[key])


DDL.update(_ddl())


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def insert_rows(con: Any, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append ``rows`` (dicts keyed by column name; absent keys are NULL) to ``table`` in one statement.

    Rows travel through a temporary JSON-lines file read by DuckDB's ``read_json`` with explicit column
    types: tens of thousands of rows per second without pyarrow, where ``executemany`` manages a few thousand.

    Returns:
        The number of rows written.
    """
    if not rows:
        return 0
    cols = COLUMNS[table]
    fd, tmp = tempfile.mkstemp(prefix="traceforge-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({k: _clean(row.get(k)) for k in cols}, default=str))
                fh.write("\n")
        spec = ", ".join(
            f"{name}: '{'VARCHAR' if typ == 'TIMESTAMP' else typ}'" for name, typ in cols.items()
        )
        select = ", ".join(f"CAST({n} AS TIMESTAMP)" if t == "TIMESTAMP" else n for n, t in cols.items())
        con.execute(
            bind(
                f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} "
                f"FROM read_json(?, columns={{{spec}}}, format='newline_delimited')",
                [tmp],
            ),
        )
    finally:
        os.unlink(tmp)
    return len(rows)


def fetch_dicts(con: Any, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Run a query and return its rows as dicts (no polars needed)."""
    cur = con.execute(bind(query, list(params) if params else []))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def sweep_summary(con: Any, run_id: str | None = None) -> list[dict[str, Any]]:
    """Per-(run, configuration, N) summary of ok cells, with the N=1 comparisons.

    A configuration is everything that makes a different curve: backend, model, server, workload, api
    (endpoint), max_new_tokens, prompt_tokens and base_url; cells of different configurations are never
    pooled. Columns: ``run_id, backend, model, server, workload, api, max_new_tokens, prompt_tokens,
    base_url, n, cells, per_agent_tps, aggregate_tps, request_tps_p50,
    latency_p50_ms, latency_p95_ms, ttft_p50_ms, ttft_p95_ms`` (means over the group's ok cells), plus
    ``parallel_efficiency`` = aggregate_tps(N) / (N x aggregate_tps(N=1)), ``degradation`` = 1 -
    per_agent_tps(N) / per_agent_tps(N=1), ``latency_p95_x`` = latency_p95(N) / latency_p95(N=1),
    ``cliff_n`` = the first N (ascending) of the group whose per-request speed (median request tokens/s) is
    below half that of N=1, and ``skipped``/``failed`` cell counts. Comparisons are NULL without an N=1 cell.
    """
    where = "WHERE run_id = ?" if run_id else ""
    rows = fetch_dicts(
        con,
        f"""
        SELECT run_id, backend, model, server, workload, api, max_new_tokens, prompt_tokens, base_url, n,
               count(*) FILTER (WHERE status = 'ok') AS cells,
               count(*) FILTER (WHERE status = 'skipped') AS skipped,
               count(*) FILTER (WHERE status NOT IN ('ok', 'skipped')) AS failed,
               avg(per_agent_tps) FILTER (WHERE status = 'ok') AS per_agent_tps,
               avg(aggregate_tps) FILTER (WHERE status = 'ok') AS aggregate_tps,
               avg(request_tps_p50) FILTER (WHERE status = 'ok') AS request_tps_p50,
               avg(latency_p50_ms) FILTER (WHERE status = 'ok') AS latency_p50_ms,
               avg(latency_p95_ms) FILTER (WHERE status = 'ok') AS latency_p95_ms,
               avg(ttft_p50_ms) FILTER (WHERE status = 'ok') AS ttft_p50_ms,
               avg(ttft_p95_ms) FILTER (WHERE status = 'ok') AS ttft_p95_ms
        FROM cell_summary {where}
        GROUP BY ALL
        ORDER BY run_id, backend, model, server NULLS FIRST, workload, api NULLS FIRST,
                 max_new_tokens NULLS FIRST, prompt_tokens NULLS FIRST, base_url NULLS FIRST, n
        """,
        [run_id] if run_id else None,
    )
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row[k] for k in ("run_id", *CONFIG_COLUMNS))
        groups.setdefault(key, []).append(row)
    for members in groups.values():
        base = next((r for r in members if r["n"] == 1 and r["cells"]), None)
        cliff = None
        for row in members:
            row["parallel_efficiency"] = _ratio(
                row["aggregate_tps"], None if base is None else row["n"] * base["aggregate_tps"]
            )
            share = _ratio(row["per_agent_tps"], _field(base, "per_agent_tps"))
            row["degradation"] = None if share is None else 1.0 - share
            row["latency_p95_x"] = _ratio(row["latency_p95_ms"], _field(base, "latency_p95_ms"))
            speed = _ratio(row["request_tps_p50"], _field(base, "request_tps_p50"))
            if cliff is None and speed is not None and speed < 0.5:
                cliff = row["n"]
        for row in members:
            row["cliff_n"] = cliff
    return rows


def _field(row: dict[str, Any] | None, name: str) -> float | None:
    """``row[name]``, or None without a row."""
    return None if row is None else row[name]


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return float(num) / float(den)


def column_list(table: str) -> Iterable[str]:
    """The columns of a runner table, in order."""
    return COLUMNS[table].keys()
