"""A deliberately simple reference implementation of traceforge's timeline metrics.

It reads an nsys SQLite export with the standard library's ``sqlite3`` and computes every metric of
``docs/schema.md`` in plain Python, one obvious step at a time, so that the tests can compare traceforge's
fast Rust core with something independent of it. Nothing here is optimised or shared with traceforge.

Definitions (intervals are half-open ``[start, end)``, in ns):

* A zero-length kernel ``[t, t)`` is the empty set: it counts in ``kernel_count``, ``span_ns`` and
  ``first_start_ns``/``last_end_ns``, but is never *active*, so it adds nothing to ``busy_ns``,
  ``max_concurrency``, ``overlap_ns`` or the concurrency levels and does not split a gap.
* An end at ``t`` and a start at ``t`` do not overlap (the sweep processes ends before starts).
* Gaps are the idle stretches strictly between consecutive busy periods, longer than 0 ns.
* Percentiles use linear interpolation between closest ranks (numpy's default ``method="linear"``).
* A GPU operation is launched by the API call with the same (pid, correlationId); pid and tid are decoded
  from nsys' serialized ``globalTid``/``globalPid`` as ``pid = (g >> 24) & 0xFFFFFF``, ``tid = g & 0xFFFFFF``
  (the decode nsys' own reports use).
* NVTX projection: a GPU operation belongs to a push/pop or start/end range when its launching API call ran
  on the range's thread (same pid and tid) and started inside the range, ``range.start <= api.start <
  range.end``. Nested ranges are therefore included in their parents.

CUDA graphs (issue 21; docs/dev/cuda-graphs-notes.md has what the real exports hold):

* A *graph execution* is one ``CUPTI_ACTIVITY_KIND_GRAPH_TRACE`` row (``--cuda-graph-trace=graph``, where nsys
  writes no kernel rows for the graph's kernels). In node mode (``--cuda-graph-trace=node``) there is no
  GRAPH_TRACE row: the graph's kernels are ordinary kernel rows with a ``graphNodeId`` and the correlation id
  of their ``cudaGraphLaunch``; one graph execution is then the kernels of one (pid, correlationId, device).
* The *GPU activities* of a device or stream are its kernels plus its GRAPH_TRACE rows, each ``[start, end)``
  on its device and stream. Timeline metrics (span, first/last, busy, utilization, concurrency, overlap,
  levels, gaps), launch latency and the NVTX projection are computed over activities; ``kernel_count``,
  ``kernel_time_ns`` and ``kernel_summary`` stay kernels only. In node mode nothing changes: the kernels are
  already there, and ``graph_launch_count``/``graph_ns`` (GRAPH_TRACE rows only) are 0.
* A trace without GRAPH_TRACE rows gets exactly the metrics it got before graphs were handled.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

#: CUPTI's ``CUpti_ActivityMemcpyKind`` values (``ENUM_CUDA_MEMCPY_OPER``), spelled as docs/schema.md does.
COPY_KIND_NAMES = {
    0: "Unknown",
    1: "HtoD",
    2: "DtoH",
    3: "HtoA",
    4: "AtoH",
    5: "AtoA",
    6: "AtoD",
    7: "DtoA",
    8: "DtoD",
    9: "HtoH",
    10: "PtoP",
    11: "UVM_HtoD",
    12: "UVM_DtoH",
    13: "UVM_DtoD",
}

NVTX_PUSHPOP = (59, 70)  # NvtxPushPopRange, NvtxtPushPopRange
NVTX_STARTEND = (60, 71)  # NvtxStartEndRange, NvtxtStartEndRange
NVTX_DOMAIN_CREATE = 75


#: The device_metrics / stream_metrics columns every reference metric dict holds (docs/schema.md), in order.
METRIC_COLUMNS = [
    "kernel_count",
    "kernel_time_ns",
    "span_ns",
    "first_start_ns",
    "last_end_ns",
    "busy_ns",
    "utilization",
    "max_concurrency",
    "overlap_ns",
    "gap_count",
    "gap_total_ns",
    "gap_p50_ns",
    "gap_p90_ns",
    "gap_p99_ns",
    "gap_max_ns",
    "memcpy_count",
    "memcpy_ns",
    "memcpy_bytes",
    "memset_count",
    "memset_ns",
    "memset_bytes",
    "launch_latency_p50_ns",
    "launch_latency_p90_ns",
    "launch_latency_p99_ns",
    "launch_matched",
    "stream_count",
]


def decode_pid(global_id: int) -> int:
    """The process id inside an nsys serialized globalTid/globalPid."""
    return (global_id >> 24) & 0xFFFFFF


def decode_tid(global_tid: int) -> int:
    """The thread id inside an nsys serialized globalTid."""
    return global_tid & 0xFFFFFF


def percentile(values: list[int], q: float) -> Optional[float]:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: list[int]) -> Optional[float]:
    """The median (mean of the two middle values for an even count)."""
    return percentile(values, 50.0)


def sample_stddev(values: list[int]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0.0 for fewer than 2 values, as nsys prints."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass
class Kernel:
    """One row of CUPTI_ACTIVITY_KIND_KERNEL, names resolved."""

    rowid: int
    device_id: int
    stream_id: int
    pid: int
    correlation_id: Optional[int]
    start: int
    end: int
    name: str
    short_name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    api: Optional[ApiCall] = None
    graph_node_id: Optional[int] = None  # graphNodeId: set for the kernels of a graph in node mode


@dataclass
class MemOp:
    """One row of CUPTI_ACTIVITY_KIND_MEMCPY or CUPTI_ACTIVITY_KIND_MEMSET."""

    device_id: int
    stream_id: int
    pid: int
    correlation_id: Optional[int]
    start: int
    end: int
    op: str  # "memcpy" | "memset"
    copy_kind: str
    bytes: int
    api: Optional[ApiCall] = None


@dataclass
class ApiCall:
    """One row of CUPTI_ACTIVITY_KIND_RUNTIME (runtime and driver calls alike)."""

    pid: int
    tid: int
    correlation_id: Optional[int]
    start: int
    end: int
    name: str


@dataclass
class NvtxRange:
    """One push/pop or start/end range of NVTX_EVENTS."""

    rowid: int
    pid: int
    tid: int
    start: int
    end: int
    name: str
    domain: Optional[str]
    kind: str  # "push_pop" | "start_end"
    level: Optional[int] = None


@dataclass
class GraphTrace:
    """One row of CUPTI_ACTIVITY_KIND_GRAPH_TRACE: one whole-graph execution (graph mode)."""

    rowid: int
    device_id: int
    stream_id: int
    pid: int
    correlation_id: Optional[int]
    start: int
    end: int
    graph_id: int
    graph_exec_id: int
    api: Optional[ApiCall] = None


@dataclass
class Export:
    """The events of one export, read plainly."""

    kernels: list[Kernel] = field(default_factory=list)
    memops: list[MemOp] = field(default_factory=list)
    api_calls: list[ApiCall] = field(default_factory=list)
    nvtx: list[NvtxRange] = field(default_factory=list)
    #: CUPTI_ACTIVITY_KIND_GRAPH_TRACE rows (graph mode); empty when the table is absent.
    graph_traces: list[GraphTrace] = field(default_factory=list)
    #: CUDA_GRAPH_NODE_EVENTS: graphNodeId -> originalGraphNodeId (None when the node is not a clone).
    graph_node_origins: dict[int, Optional[int]] = field(default_factory=dict)
    #: META_DATA_CAPTURE ``PROCESS_<n>:CUDA_GRAPH_TRACE_OPTIONS:MODE`` values, by process index n.
    graph_trace_modes: dict[int, str] = field(default_factory=dict)


def _tables(con: sqlite3.Connection) -> set[str]:
    return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_export(path: str) -> Export:
    """Read kernels, memcpy/memset, CUDA API calls and NVTX ranges; link each GPU op to its API call."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = _tables(con)
        strings = dict(con.execute("SELECT id, value FROM StringIds")) if "StringIds" in tables else {}
        out = Export()
        if "CUPTI_ACTIVITY_KIND_KERNEL" in tables:
            has_node = "graphNodeId" in _columns(con, "CUPTI_ACTIVITY_KIND_KERNEL")
            for row in con.execute(
                "SELECT rowid, deviceId, streamId, globalPid, correlationId, start, end, demangledName,"
                " shortName,"
                " gridX, gridY, gridZ, blockX, blockY, blockZ,"
                + (" graphNodeId" if has_node else " NULL")
                + " FROM CUPTI_ACTIVITY_KIND_KERNEL"
            ):
                out.kernels.append(
                    Kernel(
                        rowid=row[0],
                        device_id=row[1],
                        stream_id=row[2],
                        pid=decode_pid(row[3]),
                        correlation_id=row[4],
                        start=row[5],
                        end=row[6],
                        name=strings[row[7]],
                        short_name=strings[row[8]],
                        grid=(row[9], row[10], row[11]),
                        block=(row[12], row[13], row[14]),
                        graph_node_id=row[15],
                    )
                )
        if "CUPTI_ACTIVITY_KIND_MEMCPY" in tables:
            for row in con.execute(
                "SELECT deviceId, streamId, globalPid, correlationId, start, end, copyKind, bytes"
                " FROM CUPTI_ACTIVITY_KIND_MEMCPY"
            ):
                out.memops.append(
                    MemOp(
                        row[0],
                        row[1],
                        decode_pid(row[2]),
                        row[3],
                        row[4],
                        row[5],
                        "memcpy",
                        COPY_KIND_NAMES[row[6]],
                        row[7],
                    )
                )
        if "CUPTI_ACTIVITY_KIND_MEMSET" in tables:
            for row in con.execute(
                "SELECT deviceId, streamId, globalPid, correlationId, start, end, bytes"
                " FROM CUPTI_ACTIVITY_KIND_MEMSET"
            ):
                out.memops.append(
                    MemOp(
                        row[0], row[1], decode_pid(row[2]), row[3], row[4], row[5], "memset", "memset", row[6]
                    )
                )
        if "CUPTI_ACTIVITY_KIND_RUNTIME" in tables:
            for row in con.execute(
                "SELECT globalTid, correlationId, start, end, nameId FROM CUPTI_ACTIVITY_KIND_RUNTIME"
            ):
                out.api_calls.append(
                    ApiCall(
                        decode_pid(row[0]),
                        decode_tid(row[0]),
                        row[1],
                        row[2],
                        row[3],
                        strings.get(row[4], ""),
                    )
                )
        if "NVTX_EVENTS" in tables:
            out.nvtx = _read_nvtx(con, strings)
        if "CUPTI_ACTIVITY_KIND_GRAPH_TRACE" in tables:
            for row in con.execute(
                "SELECT rowid, deviceId, streamId, globalPid, correlationId, start, end, graphId, graphExecId"
                " FROM CUPTI_ACTIVITY_KIND_GRAPH_TRACE"
            ):
                out.graph_traces.append(
                    GraphTrace(
                        row[0], row[1], row[2], decode_pid(row[3]), row[4], row[5], row[6], row[7], row[8]
                    )
                )
        if "CUDA_GRAPH_NODE_EVENTS" in tables:
            for node, original in con.execute(
                "SELECT graphNodeId, originalGraphNodeId FROM CUDA_GRAPH_NODE_EVENTS ORDER BY start, rowid"
            ):
                if original is not None or node not in out.graph_node_origins:
                    out.graph_node_origins[node] = original
        if "META_DATA_CAPTURE" in tables:
            for name, value in con.execute("SELECT name, value FROM META_DATA_CAPTURE"):
                parts = name.split(":")
                if (
                    len(parts) == 3
                    and parts[0].startswith("PROCESS_")
                    and parts[0][len("PROCESS_") :].isdigit()
                    and parts[1:] == ["CUDA_GRAPH_TRACE_OPTIONS", "MODE"]
                    and value is not None
                ):
                    out.graph_trace_modes[int(parts[0][len("PROCESS_") :])] = value
    finally:
        con.close()

    by_correlation: dict[tuple[int, int], ApiCall] = {}
    for call in out.api_calls:
        if call.correlation_id is not None:
            by_correlation[(call.pid, call.correlation_id)] = call
    for kernel in out.kernels:
        kernel.api = by_correlation.get((kernel.pid, kernel.correlation_id))  # type: ignore[arg-type]
    for memop in out.memops:
        memop.api = by_correlation.get((memop.pid, memop.correlation_id))  # type: ignore[arg-type]
    for graph in out.graph_traces:
        graph.api = by_correlation.get((graph.pid, graph.correlation_id))  # type: ignore[arg-type]
    return out


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in con.execute(f'PRAGMA table_info("{table}")')}


def _read_nvtx(con: sqlite3.Connection, strings: dict[int, str]) -> list[NvtxRange]:
    domains: dict[tuple[int, int], str] = {}
    for domain_id, global_tid, text in con.execute(
        "SELECT domainId, globalTid, text FROM NVTX_EVENTS WHERE eventType = ? ORDER BY start",
        [NVTX_DOMAIN_CREATE],
    ):
        domains.setdefault((decode_pid(global_tid), domain_id), text)
    ranges = []
    for rowid, start, end, event_type, text, text_id, global_tid, domain_id in con.execute(
        "SELECT rowid, start, end, eventType, text, textId, globalTid, domainId FROM NVTX_EVENTS"
    ):
        if event_type not in NVTX_PUSHPOP + NVTX_STARTEND or end is None:
            continue
        pid = decode_pid(global_tid)
        label = strings.get(text_id) if text_id is not None else text
        domain = domains.get((pid, domain_id)) if domain_id else None
        name = f"{domain}:{label}" if domain is not None else label
        kind = "push_pop" if event_type in NVTX_PUSHPOP else "start_end"
        ranges.append(NvtxRange(rowid, pid, decode_tid(global_tid), start, end, name or "", domain, kind))
    # Push/pop ranges of one thread form a stack: the level is the number of open ranges enclosing this one.
    by_thread: dict[tuple[int, int], list[NvtxRange]] = defaultdict(list)
    for r in ranges:
        if r.kind == "push_pop":
            by_thread[(r.pid, r.tid)].append(r)
    for thread_ranges in by_thread.values():
        stack: list[NvtxRange] = []
        for r in sorted(thread_ranges, key=lambda x: (x.start, -x.end)):
            while stack and stack[-1].end <= r.start:
                stack.pop()
            r.level = len(stack)
            stack.append(r)
    return ranges


def sweep(intervals: list[tuple[int, int]]) -> dict[str, Any]:
    """Concurrency, busy time and gaps of a set of half-open intervals, by a plain event sweep.

    Returns:
        busy_ns, overlap_ns, max_concurrency, levels ({level: ns} for level >= 1, zero times left out) and
        gaps ([(start, end)] of the idle stretches between busy periods).
    """
    events = []
    for start, end in intervals:
        if end > start:  # an empty interval is never active
            events.append((start, 1))
            events.append((end, -1))
    events.sort()  # at equal times (t, -1) sorts before (t, +1): an end at t and a start at t do not overlap
    levels: dict[int, int] = defaultdict(int)
    gaps: list[tuple[int, int]] = []
    level = 0
    max_level = 0
    prev_t: Optional[int] = None
    for t, delta in events:
        if prev_t is not None and t > prev_t:
            if level > 0:
                levels[level] += t - prev_t
            else:
                gaps.append((prev_t, t))  # level 0 after the first event and before the last: a gap
        level += delta
        max_level = max(max_level, level)
        prev_t = t
    assert level == 0
    return {
        "busy_ns": sum(levels.values()),
        "overlap_ns": sum(ns for lv, ns in levels.items() if lv >= 2),
        "max_concurrency": max_level,
        "levels": {lv: ns for lv, ns in levels.items() if ns > 0},
        "gaps": gaps,
    }


def kernel_metrics(kernels: list[Kernel], memops: list[MemOp]) -> dict[str, Any]:
    """The kernel columns shared by device_metrics and stream_metrics, plus the memcpy/memset totals."""
    m: dict[str, Any] = {"kernel_count": len(kernels)}
    m["kernel_time_ns"] = sum(k.end - k.start for k in kernels)
    if kernels:
        m["first_start_ns"] = min(k.start for k in kernels)
        m["last_end_ns"] = max(k.end for k in kernels)
        m["span_ns"] = m["last_end_ns"] - m["first_start_ns"]
    else:
        m["first_start_ns"] = m["last_end_ns"] = m["span_ns"] = None
    s = sweep([(k.start, k.end) for k in kernels])
    m["busy_ns"] = s["busy_ns"]
    m["utilization"] = s["busy_ns"] / m["span_ns"] if m["span_ns"] else None
    m["max_concurrency"] = s["max_concurrency"]
    m["overlap_ns"] = s["overlap_ns"]
    gap_lengths = [end - start for start, end in s["gaps"]]
    m["gap_count"] = len(gap_lengths)
    m["gap_total_ns"] = sum(gap_lengths)
    m["gap_p50_ns"] = percentile(gap_lengths, 50)
    m["gap_p90_ns"] = percentile(gap_lengths, 90)
    m["gap_p99_ns"] = percentile(gap_lengths, 99)
    m["gap_max_ns"] = max(gap_lengths) if gap_lengths else None
    for op in ("memcpy", "memset"):
        ops = [x for x in memops if x.op == op]
        m[f"{op}_count"] = len(ops)
        m[f"{op}_ns"] = sum(x.end - x.start for x in ops)
        m[f"{op}_bytes"] = sum(x.bytes for x in ops)
    latencies = [k.start - k.api.start for k in kernels if k.api is not None]
    m["launch_latency_p50_ns"] = percentile(latencies, 50)
    m["launch_latency_p90_ns"] = percentile(latencies, 90)
    m["launch_latency_p99_ns"] = percentile(latencies, 99)
    m["launch_matched"] = len(latencies)
    m["stream_count"] = len({k.stream_id for k in kernels})
    m["_levels"] = s["levels"]
    m["_gaps"] = s["gaps"]
    return m


def activity_metrics(kernels: list[Kernel], memops: list[MemOp], graphs: list[GraphTrace]) -> dict[str, Any]:
    """``kernel_metrics`` over GPU activities: the kernels plus the whole-graph executions (GRAPH_TRACE rows).

    ``kernel_count``, ``kernel_time_ns`` and the memcpy/memset totals are those of ``kernel_metrics``; every
    timeline column (first/last, span, busy, utilization, concurrency, overlap, gaps, levels), the launch
    latency percentiles, ``launch_matched`` and ``stream_count`` count a graph execution as one activity.
    ``graph_launch_count``/``graph_ns``: the GRAPH_TRACE rows and their summed durations. With no graphs
    the result equals ``kernel_metrics(kernels, memops)`` plus ``graph_launch_count = graph_ns = 0``.
    """
    m = kernel_metrics(kernels, memops)
    activities = [(k.start, k.end) for k in kernels] + [(g.start, g.end) for g in graphs]
    if activities:
        m["first_start_ns"] = min(start for start, _ in activities)
        m["last_end_ns"] = max(end for _, end in activities)
        m["span_ns"] = m["last_end_ns"] - m["first_start_ns"]
    else:
        m["first_start_ns"] = m["last_end_ns"] = m["span_ns"] = None
    s = sweep(activities)
    m["busy_ns"] = s["busy_ns"]
    m["utilization"] = s["busy_ns"] / m["span_ns"] if m["span_ns"] else None
    m["max_concurrency"] = s["max_concurrency"]
    m["overlap_ns"] = s["overlap_ns"]
    gap_lengths = [end - start for start, end in s["gaps"]]
    m["gap_count"] = len(gap_lengths)
    m["gap_total_ns"] = sum(gap_lengths)
    m["gap_p50_ns"] = percentile(gap_lengths, 50)
    m["gap_p90_ns"] = percentile(gap_lengths, 90)
    m["gap_p99_ns"] = percentile(gap_lengths, 99)
    m["gap_max_ns"] = max(gap_lengths) if gap_lengths else None
    latencies = [k.start - k.api.start for k in kernels if k.api is not None]
    latencies += [g.start - g.api.start for g in graphs if g.api is not None]
    m["launch_latency_p50_ns"] = percentile(latencies, 50)
    m["launch_latency_p90_ns"] = percentile(latencies, 90)
    m["launch_latency_p99_ns"] = percentile(latencies, 99)
    m["launch_matched"] = len(latencies)
    m["stream_count"] = len({k.stream_id for k in kernels} | {g.stream_id for g in graphs})
    m["graph_launch_count"] = len(graphs)
    m["graph_ns"] = sum(g.end - g.start for g in graphs)
    m["_levels"] = s["levels"]
    m["_gaps"] = s["gaps"]
    return m


def graph_launches(ex: Export) -> list[dict[str, Any]]:
    """One row per graph execution, in either capture mode (the ``graph_launches`` table).

    Graph mode: each GRAPH_TRACE row, ``kernel_count``/``kernel_ns`` None. Node mode: the kernels with a
    ``graphNodeId`` grouped by (pid, correlationId, device) -- the kernels of one ``cudaGraphLaunch``;
    ``start_ns``/``end_ns`` are their earliest start and latest end, ``stream_id`` the stream of the earliest
    kernel (lowest stream id on a tie), ``kernel_count``/``kernel_ns`` their number and summed durations.
    Node mode ids (CUPTI writes no graphId for kernels): ``graph_exec_id`` is ``graphNodeId >> 32`` of the
    earliest kernel (the node's owning graph: the executable's clone), ``graph_id`` the same of the node it
    was cloned from (``CUDA_GRAPH_NODE_EVENTS.originalGraphNodeId``), or of the node itself when it has none.
    The launch: the API call with the same (pid, correlationId), as for kernels.
    """
    rows = []
    for g in ex.graph_traces:
        rows.append(
            {
                "device_id": g.device_id,
                "stream_id": g.stream_id,
                "graph_id": g.graph_id,
                "graph_exec_id": g.graph_exec_id,
                "start_ns": g.start,
                "end_ns": g.end,
                "pid": g.pid,
                "correlation_id": g.correlation_id,
                "launch_tid": g.api.tid if g.api else None,
                "api_start_ns": g.api.start if g.api else None,
                "launch_latency_ns": g.start - g.api.start if g.api else None,
                "kernel_count": None,
                "kernel_ns": None,
            }
        )
    groups: dict[tuple[int, Optional[int], int], list[Kernel]] = defaultdict(list)
    for k in ex.kernels:
        if k.graph_node_id is not None:
            groups[(k.pid, k.correlation_id, k.device_id)].append(k)
    for (pid, correlation_id, device_id), kernels in groups.items():
        first = min(kernels, key=lambda k: (k.start, k.stream_id, k.rowid))
        node = first.graph_node_id
        assert node is not None
        original = ex.graph_node_origins.get(node)
        start = min(k.start for k in kernels)
        api = first.api
        rows.append(
            {
                "device_id": device_id,
                "stream_id": first.stream_id,
                "graph_id": (original if original is not None else node) >> 32,
                "graph_exec_id": node >> 32,
                "start_ns": start,
                "end_ns": max(k.end for k in kernels),
                "pid": pid,
                "correlation_id": correlation_id,
                "launch_tid": api.tid if api else None,
                "api_start_ns": api.start if api else None,
                "launch_latency_ns": start - api.start if api else None,
                "kernel_count": len(kernels),
                "kernel_ns": sum(k.end - k.start for k in kernels),
            }
        )
    return sorted(rows, key=lambda r: (r["device_id"], r["start_ns"], r["stream_id"], r["pid"]))


def graph_summary(launches: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """Per (device, graph_id) over ``graph_launches`` rows: count, total/avg/median/min/max of end - start."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for r in launches:
        groups[(r["device_id"], r["graph_id"])].append(r["end_ns"] - r["start_ns"])
    out = {}
    for key, durations in groups.items():
        total = sum(durations)
        out[key] = {
            "count": len(durations),
            "total_ns": total,
            "avg_ns": total / len(durations),
            "median_ns": median(durations),
            "min_ns": min(durations),
            "max_ns": max(durations),
        }
    return out


def cuda_graph_trace(ex: Export) -> Optional[str]:
    """``traces.cuda_graph_trace``: 'graph', 'node' or None.

    None when the capture launched no graphs (no GRAPH_TRACE row and no kernel with a graphNodeId: nsys
    writes ``CUDA_GRAPH_TRACE_OPTIONS:MODE = Graph`` into every 2025.3 capture, graphs or not). Otherwise the
    ``META_DATA_CAPTURE`` ``PROCESS_<n>:CUDA_GRAPH_TRACE_OPTIONS:MODE`` value lowercased, when every process
    that has one says the same ``Graph``/``Node``; else inferred from the rows: 'graph' when GRAPH_TRACE has
    rows, 'node' when only graph-node kernels do.
    """
    has_graph_rows = bool(ex.graph_traces)
    has_node_kernels = any(k.graph_node_id is not None for k in ex.kernels)
    if not has_graph_rows and not has_node_kernels:
        return None
    said = {v.strip().lower() for v in ex.graph_trace_modes.values()}
    if len(said) == 1 and said <= {"graph", "node"}:
        return said.pop()
    return "graph" if has_graph_rows else "node"


@dataclass
class Reference:
    """Every metric of one export, keyed the way the tests look rows up."""

    export: Export
    device_metrics: dict[int, dict[str, Any]]
    stream_metrics: dict[tuple[int, int], dict[str, Any]]
    concurrency_levels: dict[int, dict[int, int]]
    gaps: dict[int, list[tuple[int, int]]]
    kernel_summary: dict[tuple[int, str], dict[str, Any]]
    memop_summary: dict[tuple[int, str, str], dict[str, Any]]
    nvtx_projection: list[dict[str, Any]]
    launches: list[tuple[int, int, int, int, int, Optional[int], Optional[int], Optional[int]]]
    #: ``graph_launches`` rows (see ``graph_launches``), sorted by (device, start, stream, pid).
    graph_launches: list[dict[str, Any]] = field(default_factory=list)
    #: ``graph_summary`` keyed by (device, graph_id).
    graph_summary: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    #: ``traces.cuda_graph_trace``.
    cuda_graph_trace: Optional[str] = None


def compute(path: str) -> Reference:
    """Compute every metric of the export at ``path`` (over GPU activities: kernels + graph executions)."""
    ex = read_export(path)
    devices = sorted(
        {k.device_id for k in ex.kernels}
        | {m.device_id for m in ex.memops}
        | {g.device_id for g in ex.graph_traces}
    )
    device_metrics = {}
    for dev in devices:
        device_metrics[dev] = activity_metrics(
            [k for k in ex.kernels if k.device_id == dev],
            [m for m in ex.memops if m.device_id == dev],
            [g for g in ex.graph_traces if g.device_id == dev],
        )
    stream_metrics = {}
    # A stream (like a device) gets a row when it ran kernels, memory operations or graph executions.
    for dev, stream in sorted(
        {(k.device_id, k.stream_id) for k in ex.kernels}
        | {(m.device_id, m.stream_id) for m in ex.memops}
        | {(g.device_id, g.stream_id) for g in ex.graph_traces}
    ):
        stream_metrics[(dev, stream)] = activity_metrics(
            [k for k in ex.kernels if k.device_id == dev and k.stream_id == stream],
            [m for m in ex.memops if m.device_id == dev and m.stream_id == stream],
            [g for g in ex.graph_traces if g.device_id == dev and g.stream_id == stream],
        )
    concurrency_levels = {dev: m["_levels"] for dev, m in device_metrics.items()}
    gaps = {dev: m["_gaps"] for dev, m in device_metrics.items()}

    kernel_summary: dict[tuple[int, str], dict[str, Any]] = {}
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for k in ex.kernels:
        groups[(k.device_id, k.name)].append(k.end - k.start)
    for (dev, name), durations in groups.items():
        total = sum(durations)
        device_total = device_metrics[dev]["kernel_time_ns"]
        kernel_summary[(dev, name)] = {
            "count": len(durations),
            "total_ns": total,
            "avg_ns": total / len(durations),
            "median_ns": median(durations),
            "min_ns": min(durations),
            "max_ns": max(durations),
            "stddev_ns": sample_stddev(durations),
            "share": total / device_total if device_total else None,
        }

    memop_summary: dict[tuple[int, str, str], dict[str, Any]] = {}
    mgroups: dict[tuple[int, str, str], list[MemOp]] = defaultdict(list)
    for m in ex.memops:
        mgroups[(m.device_id, m.op, m.copy_kind)].append(m)
    for key, ops in mgroups.items():
        durations = [x.end - x.start for x in ops]
        total = sum(durations)
        total_bytes = sum(x.bytes for x in ops)
        memop_summary[key] = {
            "count": len(ops),
            "total_ns": total,
            "total_bytes": total_bytes,
            "avg_ns": total / len(ops),
            "min_ns": min(durations),
            "max_ns": max(durations),
            "bandwidth_gbps": total_bytes / total if total else None,
        }

    launches = [
        (
            k.device_id,
            k.pid,
            k.correlation_id if k.correlation_id is not None else -1,
            k.start,
            k.end,
            k.api.tid if k.api else None,
            k.api.start if k.api else None,
            k.start - k.api.start if k.api else None,
        )
        for k in ex.kernels
    ]
    graph_rows = graph_launches(ex)
    return Reference(
        export=ex,
        device_metrics=device_metrics,
        stream_metrics=stream_metrics,
        concurrency_levels=concurrency_levels,
        gaps=gaps,
        kernel_summary=kernel_summary,
        memop_summary=memop_summary,
        nvtx_projection=nvtx_projection(ex),
        launches=sorted(launches, key=lambda t: tuple(-1 if v is None else v for v in t)),
        graph_launches=graph_rows,
        graph_summary=graph_summary(graph_rows),
        cuda_graph_trace=cuda_graph_trace(ex),
    )


def nvtx_projection(ex: Export) -> list[dict[str, Any]]:
    """One row per NVTX push/pop or start/end range: the GPU work launched from inside it.

    GPU operations are kernels, memcpy/memset and whole-graph executions (GRAPH_TRACE rows, one operation
    each). ``kernel_count``/``kernel_time_ns`` count kernels only; ``graph_ns`` sums graph executions.
    """
    ops: list[tuple[ApiCall, int, int, str]] = []  # (launching call, gpu start, gpu end, kind)
    for k in ex.kernels:
        if k.api is not None:
            ops.append((k.api, k.start, k.end, "kernel"))
    for m in ex.memops:
        if m.api is not None:
            ops.append((m.api, m.start, m.end, "memop"))
    for g in ex.graph_traces:
        if g.api is not None:
            ops.append((g.api, g.start, g.end, "graph"))
    rows = []
    for r in ex.nvtx:
        inside = [
            op for op in ops if op[0].pid == r.pid and op[0].tid == r.tid and r.start <= op[0].start < r.end
        ]
        kernels = [op for op in inside if op[3] == "kernel"]
        graphs = [op for op in inside if op[3] == "graph"]
        rows.append(
            {
                "name": r.name,
                "domain": r.domain,
                "pid": r.pid,
                "tid": r.tid,
                "start_ns": r.start,
                "end_ns": r.end,
                "kind": r.kind,
                "level": r.level,
                "gpu_start_ns": min(op[1] for op in inside) if inside else None,
                "gpu_end_ns": max(op[2] for op in inside) if inside else None,
                "gpu_op_count": len(inside),
                "launch_count": len({id(op[0]) for op in inside}),
                "kernel_count": len(kernels),
                "kernel_time_ns": sum(op[2] - op[1] for op in kernels),
                "graph_ns": sum(op[2] - op[1] for op in graphs),
            }
        )
    return rows
