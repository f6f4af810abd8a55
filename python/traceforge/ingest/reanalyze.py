"""Re-analysis: recompute the derived tables of stored traces from their stored events.

``traceforge reanalyze`` calls :func:`stale_traces` then :func:`reanalyze`; the original export files are
not needed, and every trace is replaced in its own transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import errors
from ..errors import TraceforgeError
from ..store import Store
from ..store.schema import DERIVED_STORAGE, DERIVED_TABLES, METRIC_VERSION
from ..store.sql_params import bind
from ..store.storage import delete_storage_rows, insert_trace_rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class ReanalyzeOutcome:
    """The result of recomputing one stored trace's derived metrics.

    Attributes:
        trace_id: the trace.
        status: ``recomputed`` or ``failed``.
        previous_version: its ``metric_version`` before.
        message: a one-line note or the error.
        seconds: time taken.
    """

    trace_id: str
    status: str
    previous_version: int | None
    message: str
    seconds: float


def stale_traces(
    store: Store, *, everything: bool = False, trace_ids: Sequence[str] | None = None
) -> list[str]:
    """Trace ids whose derived rows need recomputing.

    Args:
        store: the store.
        everything: all stored traces, whatever their metric version.
        trace_ids: only these (each must be stored).

    Returns:
        The ids, oldest metric version first.
    """
    rows = store.con.execute(
        "SELECT trace_id, metric_version FROM traces ORDER BY metric_version NULLS FIRST, trace_id"
    ).fetchall()
    if trace_ids is not None:
        stored = {str(r[0]) for r in rows}
        missing = [t for t in trace_ids if t not in stored]
        if missing:
            raise errors.QueryError(f"no such trace in the store: {', '.join(missing)}", path=store.path)
        wanted = set(trace_ids)
        return [str(r[0]) for r in rows if r[0] in wanted]
    return [str(r[0]) for r in rows if everything or r[1] is None or int(r[1]) != METRIC_VERSION]


def reanalyze(
    store: Store,
    trace_ids: Sequence[str],
    *,
    on_outcome: Callable[[ReanalyzeOutcome], None] | None = None,
) -> list[ReanalyzeOutcome]:
    """Recompute the derived tables of stored traces from their stored events (no export files needed).

    Each trace is one transaction: its derived rows are replaced and ``traces.metric_version`` set, or
    nothing changes. A failure is reported and the next trace done.

    Args:
        store: the writable store.
        trace_ids: the traces to recompute (see :func:`stale_traces`).
        on_outcome: called after each trace.

    Returns:
        One outcome per trace.
    """
    import duckdb

    outcomes = []
    for trace_id in trace_ids:
        start = time.perf_counter()
        row = store.con.execute(
            bind("SELECT metric_version FROM traces WHERE trace_id = ?", [trace_id])
        ).fetchone()
        previous = None if row is None or row[0] is None else int(row[0])
        try:
            with store.transaction() as con:
                recompute_metrics(store, trace_id)
                con.execute(
                    bind(
                        "UPDATE traces SET metric_version = ? WHERE trace_id = ?", [METRIC_VERSION, trace_id]
                    )
                )
            outcome = ReanalyzeOutcome(
                trace_id,
                "recomputed",
                previous,
                f"metric version {previous} -> {METRIC_VERSION}",
                time.perf_counter() - start,
            )
        except (TraceforgeError, duckdb.Error) as exc:
            outcome = ReanalyzeOutcome(
                trace_id, "failed", previous, _first_line(exc), time.perf_counter() - start
            )
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def recompute_metrics(store: Store, trace_id: str) -> None:
    """Re-derive the derived tables of one stored trace from its stored event tables.

    Runs in the caller's transaction if one is open (``reanalyze`` wraps each trace in one); the original
    export is not needed. Rows get the current ``METRIC_VERSION``.
    """
    import polars as pl

    from .. import _core

    con = store.con

    def fetch(query: str) -> pl.DataFrame:
        # Read each result to the end before the next query runs: DuckDB 1.5 closes a connection's
        # pending result when another query starts on it, which would silently empty an open stream.
        return pl.DataFrame(con.sql(bind(query, [trace_id])))

    kernels = fetch(
        "SELECT device_id::BIGINT AS device_id, stream_id, start_ns, end_ns, name, pid, correlation_id, "
        "launch_tid, api_start_ns, api_end_ns FROM kernels WHERE trace_id = $1"
    )
    memops = fetch(
        "SELECT device_id::BIGINT AS device_id, stream_id, op, copy_kind, start_ns, end_ns, bytes, pid, "
        "correlation_id, launch_tid, api_start_ns FROM memops WHERE trace_id = $1"
    )
    nvtx = fetch(
        "SELECT pid, tid, start_ns, end_ns, name, domain, kind, level::BIGINT AS level FROM nvtx_ranges "
        "WHERE trace_id = $1 ORDER BY range_index"
    )
    graph_launches = fetch(
        "SELECT device_id::BIGINT AS device_id, stream_id, graph_id, graph_exec_id, start_ns, end_ns, pid, "
        "correlation_id, launch_tid, api_start_ns, kernel_count, kernel_ns FROM graph_launches "
        "WHERE trace_id = $1"
    )
    # What each thread was doing, for idle attribution (state 0 sync, 1 gil_wait, 2 os, 3 cuda_api).
    host_states = fetch(
        "SELECT pid, tid, CASE WHEN contains(name, 'Synchronize') THEN 0 ELSE 3 END::BIGINT AS state, "
        "start_ns, end_ns FROM api_calls WHERE trace_id = $1 "
        "UNION ALL SELECT pid, tid, 1::BIGINT, start_ns, end_ns FROM gil_intervals "
        "WHERE trace_id = $1 AND state = 'wait' "
        "UNION ALL SELECT pid, tid, 2::BIGINT, start_ns, end_ns FROM os_calls WHERE trace_id = $1"
    )
    gpu_metrics = fetch("SELECT device_id, metric, ts_ns, value FROM gpu_metrics WHERE trace_id = $1")
    tables = _core.rederive(kernels, memops, nvtx, graph_launches, host_states, gpu_metrics)
    for table in DERIVED_TABLES:
        storage = DERIVED_STORAGE.get(table)
        if storage is None:
            con.execute(bind(f"DELETE FROM {table} WHERE trace_id = ?", [trace_id]))
        else:
            delete_storage_rows(con, storage, trace_id)
        written = storage or table
        insert_trace_rows(con, written, tables[written], trace_id)
    con.execute(bind("UPDATE traces SET metric_version = ? WHERE trace_id = ?", [METRIC_VERSION, trace_id]))
