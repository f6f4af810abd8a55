"""Two stored traces side by side: device metrics, kernels by name, memory operations, NVTX ranges.

Kernel, memop and NVTX figures come from the raw event tables (``kernels``, ``memops``, ``nvtx_ranges``)
summed over devices, so a diff does not depend on the derived tables being current; the device section reads
``device_metrics`` (one row per device, matched on ``device_id``), the idle-attribution columns included
when either trace has them.

Kernels and NVTX ranges are compared per call as well as in total: two runs of different sizes (1 agent
against 8) differ in every total by the same factor, and only the per-call mean and median show the one
kernel that got slower. Rows are ranked by the change in total time (where the time went); the second
kernel ranking is by the relative change of the per-call mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..store.sql_params import bind

if TYPE_CHECKING:
    import polars as pl

    from ..store import Store

#: device_metrics columns compared, in display order.
DEVICE_COLUMNS: tuple[str, ...] = (
    "kernel_count",
    "kernel_time_ns",
    "span_ns",
    "busy_ns",
    "utilization",
    "max_concurrency",
    "overlap_ns",
    "gap_count",
    "gap_total_ns",
    "gap_p50_ns",
    "gap_p99_ns",
    "memcpy_count",
    "memcpy_ns",
    "memcpy_bytes",
    "memset_count",
    "memset_ns",
    "launch_latency_p50_ns",
    "launch_latency_p99_ns",
    # The launch split (issue 16): how much of the latency is the call, how much waiting behind other work.
    "launch_api_p50_ns",
    "launch_queue_count",
    "launch_queue_p50_ns",
    "launch_queue_p99_ns",
    "stream_count",
)

#: device_metrics columns of CUDA graph work, compared after ``DEVICE_COLUMNS`` when either trace has some.
GRAPH_COLUMNS: tuple[str, ...] = ("graph_launch_count", "graph_ns")

#: device_metrics idle-attribution columns (issue 15), compared last when either trace has them (not NULL).
IDLE_COLUMNS: tuple[str, ...] = (
    "idle_sync_ns",
    "idle_gil_wait_ns",
    "idle_os_ns",
    "idle_cuda_api_ns",
    "idle_other_ns",
    "idle_unattributed_ns",
)


@dataclass
class TraceDiff:
    """The sections of a diff; every frame has ``*_a``/``*_b`` columns and ``delta`` = b - a.

    Attributes:
        trace_a, trace_b: the two trace ids (a is the reference).
        devices: ``device_id, metric, a, b, delta, rel_delta`` from ``device_metrics``.
        kernels: per kernel name ``count_a, count_b, total_ns_a, total_ns_b, delta_ns, rel_delta`` (of the
            totals), ``avg_ns_a, avg_ns_b, rel_avg`` (per-call mean and its relative change),
            ``median_ns_a, median_ns_b, rel_median`` (per-call median, linear interpolation) and
            ``delta_count`` (outer join: zero counts and totals, NULL means and medians for a kernel absent
            from one side), ranked by |delta_ns|.
        top_abs: the ``top`` kernels present in both with the largest |delta_ns| (change in total time).
        top_rel: the ``top`` kernels present in both with the largest |rel_avg| (change per call).
        only_a, only_b: kernels present in one trace only.
        memops: per (op, copy_kind) counts, time and bytes.
        nvtx: per NVTX range name the same columns as ``kernels``, ranked by |delta_ns|.
        file_a, file_b: the traces' source files (their paths as ingested).
    """

    trace_a: str
    trace_b: str
    devices: pl.DataFrame
    kernels: pl.DataFrame
    top_abs: pl.DataFrame
    top_rel: pl.DataFrame
    only_a: pl.DataFrame
    only_b: pl.DataFrame
    memops: pl.DataFrame
    nvtx: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    file_a: str = ""
    file_b: str = ""

    def label(self, side: str) -> str:
        """``A``/``B`` named by file: ``llama_n8.sqlite (7a1f03c2...)``."""
        import os

        trace, path = (self.trace_a, self.file_a) if side == "A" else (self.trace_b, self.file_b)
        return f"{os.path.basename(path)} ({trace})" if path else trace

    def sections(self) -> dict[str, pl.DataFrame]:
        """Section title -> frame, in display order."""
        return {
            "device metrics": self.devices,
            "kernels: top movers by absolute change in total time": self.top_abs,
            "kernels: top movers by relative change per call (mean)": self.top_rel,
            f"kernels only in A ({self.label('A')})": self.only_a,
            f"kernels only in B ({self.label('B')})": self.only_b,
            "memory operations": self.memops,
            "NVTX ranges (by change in total time)": self.nvtx,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (each section a list of rows)."""
        out: dict[str, Any] = {
            "trace_a": self.trace_a,
            "trace_b": self.trace_b,
            "file_a": self.file_a,
            "file_b": self.file_b,
            "notes": self.notes,
        }
        for key, frame in (
            ("devices", self.devices),
            ("kernels", self.kernels),
            ("top_abs", self.top_abs),
            ("top_rel", self.top_rel),
            ("only_a", self.only_a),
            ("only_b", self.only_b),
            ("memops", self.memops),
            ("nvtx", self.nvtx),
        ):
            out[key] = frame.to_dicts()
        return out


def resolve_trace(store: Store, trace: str) -> str:
    """Return the full trace id for ``trace``: a trace id, its file name or path, or a unique prefix of one.

    An exact id, path or file name wins over prefixes. Prefixes are matched literally (``%`` and ``_`` are
    characters, not patterns); ids and file names without regard to case.

    Raises:
        QueryError: no trace, or an ambiguous name or prefix.
    """
    import os

    text = trace.strip()
    if not text:
        raise QueryError("empty trace id")
    try:
        rows = store.con.execute("SELECT trace_id, source_path FROM traces ORDER BY trace_id").fetchall()
    except Exception as exc:
        raise QueryError(f"cannot read the traces table: {str(exc).splitlines()[0]}") from exc
    low = text.lower()
    absolute = os.path.abspath(os.path.expanduser(text))
    traces = [(str(tid), str(path or "")) for tid, path in rows]

    def prefix_of(tid: str, path: str) -> bool:  # str.startswith: literal, unlike SQL LIKE
        name = os.path.basename(path).lower()
        return tid.lower().startswith(low) or name.startswith(low) or path.startswith((text, absolute))

    exact = [t for t in traces if t[0].lower() == low or t[1] in (text, absolute)]
    if not exact:
        exact = [t for t in traces if os.path.basename(t[1]).lower() == low]
    matches = exact or [t for t in traces if prefix_of(*t)]
    if len(matches) == 1:
        return matches[0][0]
    if not matches:
        raise QueryError(
            f"no trace '{trace}' in the store ({len(traces)} trace(s) stored; see `traceforge traces`)"
        )
    listed = ", ".join(f"{tid} ({os.path.basename(path)})" for tid, path in matches[:5])
    more = ", ..." if len(matches) > 5 else ""
    raise QueryError(f"trace '{trace}' is ambiguous: {len(matches)} traces match ({listed}{more})")


def _side_by_side(
    store: Store,
    sql: str,
    a: str,
    b: str,
    keys: list[str],
    values: list[str],
    per_call: tuple[str, ...] = (),
) -> pl.DataFrame:
    """Run ``sql`` (with one ``?`` for the trace id) for both traces and outer-join on ``keys``.

    ``values`` (counts, totals) are 0 on the side that lacks a key; ``per_call`` (means, medians) NULL.
    """
    import polars as pl

    fa = store.sql(sql, [a])
    fb = store.sql(sql, [b])
    joined = fa.join(fb, on=keys, how="full", suffix="_b", coalesce=True)
    joined = joined.rename({v: f"{v}_a" for v in (*values, *per_call)})
    return joined.with_columns(
        [pl.col(f"{v}_a").fill_null(0) for v in values] + [pl.col(f"{v}_b").fill_null(0) for v in values]
    )


#: Per name: calls, total time, per-call mean and median (linear interpolation, as ``kernel_summary``).
_PER_NAME = (
    "count(*)::BIGINT AS count, sum(duration_ns)::BIGINT AS total_ns, avg(duration_ns)::DOUBLE AS avg_ns, "
    "quantile_cont(duration_ns, 0.5)::DOUBLE AS median_ns"
)


def _compare_per_name(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the changes of a per-name side-by-side frame: totals, per-call mean and median; rank by total."""
    import polars as pl

    def rel(column: str) -> pl.Expr:
        a, b = pl.col(f"{column}_a"), pl.col(f"{column}_b")
        return pl.when(a > 0).then((b - a) / a).otherwise(None)

    return (
        frame.with_columns(
            (pl.col("total_ns_b") - pl.col("total_ns_a")).alias("delta_ns"),
            (pl.col("count_b") - pl.col("count_a")).alias("delta_count"),
        )
        .with_columns(rel("total_ns").alias("rel_delta"), rel("avg_ns").alias("rel_avg"))
        .with_columns(rel("median_ns").alias("rel_median"))
        .select(
            "name",
            "count_a",
            "count_b",
            "total_ns_a",
            "total_ns_b",
            "delta_ns",
            "rel_delta",
            "avg_ns_a",
            "avg_ns_b",
            "rel_avg",
            "median_ns_a",
            "median_ns_b",
            "rel_median",
            "delta_count",
        )
        .sort([pl.col("delta_ns").abs(), "name"], descending=[True, False])
    )


def diff_traces(store: Store, trace_a: str, trace_b: str, *, top: int = 10) -> TraceDiff:
    """Diff two stored traces (b against reference a).

    Args:
        store: an open store.
        trace_a: reference trace id (or unique prefix).
        trace_b: other trace id (or unique prefix).
        top: how many top movers to list.

    Returns:
        A :class:`TraceDiff`.

    Raises:
        QueryError: a trace id is not in the store.
    """
    import polars as pl

    a = resolve_trace(store, trace_a)
    b = resolve_trace(store, trace_b)
    notes: list[str] = []
    if a == b:
        notes.append("A and B are the same trace")

    cols = ", ".join((*DEVICE_COLUMNS, *GRAPH_COLUMNS, *IDLE_COLUMNS))
    da = store.sql(f"SELECT device_id, {cols} FROM device_metrics WHERE trace_id = ? ORDER BY device_id", [a])
    db = store.sql(f"SELECT device_id, {cols} FROM device_metrics WHERE trace_id = ? ORDER BY device_id", [b])
    rows = []
    devices = sorted(set(da["device_id"].to_list()) | set(db["device_id"].to_list()))
    with_graphs = any((v or 0) > 0 for v in [*da["graph_launch_count"], *db["graph_launch_count"]])
    compared = (*DEVICE_COLUMNS, *GRAPH_COLUMNS) if with_graphs else DEVICE_COLUMNS
    if any(v is not None for v in [*da["idle_other_ns"], *db["idle_other_ns"]]):
        compared = (*compared, *IDLE_COLUMNS)
    for dev in devices:
        ra = da.filter(pl.col("device_id") == dev).to_dicts()
        rb = db.filter(pl.col("device_id") == dev).to_dicts()
        for col in compared:
            va = ra[0][col] if ra else None
            vb = rb[0][col] if rb else None
            delta = vb - va if va is not None and vb is not None else None
            rel = delta / abs(va) if delta is not None and va not in (None, 0) else None
            rows.append(
                {
                    "device_id": dev,
                    "metric": col,
                    "a": None if va is None else float(va),
                    "b": None if vb is None else float(vb),
                    "delta": None if delta is None else float(delta),
                    "rel_delta": rel,
                }
            )
    schema = {
        "device_id": pl.Int64,
        "metric": pl.Utf8,
        "a": pl.Float64,
        "b": pl.Float64,
        "delta": pl.Float64,
        "rel_delta": pl.Float64,
    }
    device_frame = pl.DataFrame(rows, schema=schema)
    if device_frame.is_empty():
        notes.append("no device_metrics rows for either trace")

    kernels = _compare_per_name(
        _side_by_side(
            store,
            f"SELECT name, {_PER_NAME} FROM kernels WHERE trace_id = ? GROUP BY name",
            a,
            b,
            ["name"],
            ["count", "total_ns"],
            ("avg_ns", "median_ns"),
        )
    )
    both = kernels.filter((pl.col("count_a") > 0) & (pl.col("count_b") > 0))
    top_abs = both.head(top)
    top_rel = both.sort([pl.col("rel_avg").abs(), "name"], descending=[True, False], nulls_last=True).head(
        top
    )
    only_a = kernels.filter(pl.col("count_b") == 0).sort("total_ns_a", descending=True)
    only_b = kernels.filter(pl.col("count_a") == 0).sort("total_ns_b", descending=True)
    for side, frame in (("A", only_a), ("B", only_b)):
        if frame.height > top:
            notes.append(
                f"{frame.height} kernel names only in {side}; the {top} with the most time are listed"
            )
    only_a, only_b = only_a.head(top), only_b.head(top)

    memops = (
        _side_by_side(
            store,
            "SELECT op, copy_kind, count(*)::BIGINT AS count, sum(duration_ns)::BIGINT AS total_ns, "
            "sum(bytes)::BIGINT AS bytes FROM memops WHERE trace_id = ? GROUP BY op, copy_kind",
            a,
            b,
            ["op", "copy_kind"],
            ["count", "total_ns", "bytes"],
        )
        .with_columns((pl.col("total_ns_b") - pl.col("total_ns_a")).alias("delta_ns"))
        .sort(["op", "copy_kind"])
    )

    nvtx = _compare_per_name(
        _side_by_side(
            store,
            f"SELECT name, {_PER_NAME} FROM nvtx_ranges "
            "WHERE trace_id = ? AND kind <> 'mark' AND end_ns IS NOT NULL GROUP BY name",
            a,
            b,
            ["name"],
            ["count", "total_ns"],
            ("avg_ns", "median_ns"),
        )
    )
    files = dict(store.con.execute(
        bind("SELECT trace_id, source_path FROM traces WHERE trace_id IN (?, ?)", [a, b])
    ).fetchall())  # fmt: skip
    return TraceDiff(
        a,
        b,
        device_frame,
        kernels,
        top_abs,
        top_rel,
        only_a,
        only_b,
        memops,
        nvtx,
        notes,
        file_a=str(files.get(a) or ""),
        file_b=str(files.get(b) or ""),
    )


def render(d: TraceDiff, fmt: str = "table") -> str:
    """Render a diff as ``table`` or ``json`` text."""
    import json

    from .compare import render_text_table

    if fmt == "json":
        return json.dumps(d.to_dict(), indent=2, default=str)
    if fmt != "table":
        raise QueryError(f"unknown --format '{fmt}' for diff (table, json)")
    parts = [
        f"A = {d.label('A')}",
        f"B = {d.label('B')}",
        "delta = B - A; rel_* = (B - A) / A; avg_ns/median_ns are per call",
    ]
    for title, frame in d.sections().items():
        parts.append("")
        parts.append(f"== {title} ==")
        if frame.is_empty():
            parts.append("(none)")
        else:
            rows = frame.to_dicts()
            parts.append(render_text_table(rows, frame.columns))
    for note in d.notes:
        parts.append(f"note: {note}")
    return "\n".join(parts)
