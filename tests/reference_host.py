"""A deliberately simple reference implementation of issue 15's host-side evidence (plain Python, sqlite3).

Issue 15 adds: the Python GIL per thread (``gil_intervals``, ``thread_gil``), OS runtime calls (``os_calls``,
``os_call_summary``), idle-gap attribution (``idle_*_ns`` columns of ``device_metrics`` and ``gaps``), and GPU
metrics (``gpu_metrics``, ``gpu_metric_summary``, ``nvtx_gpu_metrics``). What the real exports hold and why
each reading below was chosen: docs/dev/host-evidence-notes.md. This module builds on ``tests/reference.py``
(its export reader, gaps over GPU activities, NVTX projection and percentiles) and shares nothing with
traceforge. Nothing here is optimised beyond keeping the fixtures to seconds.

Definitions (intervals half-open ``[start, end)``, ns; pid/tid decoded from ``globalTid`` as in reference.py):

* GIL ranges: the NVTX push/pop or start/end ranges of a domain whose ``NvtxDomainCreate`` (eventType 75)
  text is ``GIL Trace``, in the process that created it (domain ids are per process). ``Holding GIL`` is state
  ``hold``, ``Waiting for GIL`` is ``wait`` (the label is ``StringIds[textId]``, or ``text``). Ranges of that
  domain with another label (none seen) belong to no state but are still not user ranges.
* User NVTX ranges: every range reference.py reads except the GIL domain's; push/pop ``level`` is recomputed
  over the user ranges only (GIL ranges cross the user's ranges, so counting them breaks the stack).
* ``thread_gil``: one row per (pid, tid) with at least one GIL range. ``gil_hold_ns``/``gil_wait_ns`` sum the
  durations, ``gil_wait_count`` counts wait ranges, ``gil_wait_p50/p99_ns`` (linear interpolation) and
  ``gil_wait_max_ns`` over wait durations (NULL without waits), ``name`` from ``ThreadNames`` (NULL if none;
  the row with the highest rowid when there are several).
* ``os_calls``: ``OSRT_API`` rows with ``eventClass`` 27 (``TRACE_PROCESS_EVENT_OS_RUNTIME``; what
  ``nsys stats --report osrtsum`` reads; classes 31/32 are zero-length "OSRT start/finish" markers named
  ``[Unknown]``). ``os_call_summary`` per name: count, total, avg, median, min, max of end - start.
* Idle attribution: for each gap ``[a, b)`` of a device (reference.py's gaps over kernels + GRAPH_TRACE
  executions), the *next activity* is among the non-empty activities of the device that start at ``b``, the
  one whose matched launching call (same (pid, correlationId)) started first (ties: lower pid, tid,
  correlationId); unmatched candidates lose to matched ones. No matched candidate: the whole gap is
  ``unattributed``. Else T = the call's (pid, tid), and each instant of the gap gets the first state of T
  that holds: ``sync`` (inside a CUDA API call of T whose name contains ``Synchronize``), ``gil_wait``
  (inside a ``wait`` GIL range of T), ``os`` (inside an os_call of T), ``cuda_api`` (inside any other CUDA
  call of T), ``other``. The six ``idle_*_ns`` sum to the gap length; device totals sum the gaps.
* GPU metrics: ``GPU_METRICS`` rows; ``device_id = typeId & 0xFF``; ``metric`` = ``metricName`` of
  ``TARGET_INFO_GPU_METRICS`` on (typeId, metricId); timestamps as stored (negative ones kept).
  ``gpu_metric_summary`` per (device, metric): sample_count, mean, min, max, p50, p90, p99 of ``value``.
  ``nvtx_gpu_metrics``: for every user range with a GPU projection (``gpu_start_ns`` not NULL) and every
  metric sampled on a device its projected operations ran on, the samples of those devices with
  ``gpu_start_ns <= timestamp < gpu_end_ns``: ``samples`` (may be 0) and ``mean`` (NULL when 0).
"""

from __future__ import annotations

import bisect
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

import reference
from reference import ApiCall, Export, NvtxRange, decode_pid, decode_tid, median, percentile

GIL_DOMAIN = "GIL Trace"
GIL_STATES = {"Holding GIL": "hold", "Waiting for GIL": "wait"}
OSRT_RUNTIME_CLASS = 27  # ENUM_NSYS_EVENT_CLASS TRACE_PROCESS_EVENT_OS_RUNTIME
NVTX_RANGE_TYPES = reference.NVTX_PUSHPOP + reference.NVTX_STARTEND

#: Idle states in priority order (the first that holds wins), then the gap-level fallback.
IDLE_STATES = ("sync", "gil_wait", "os", "cuda_api", "other")
IDLE_COLUMNS = [f"idle_{s}_ns" for s in IDLE_STATES] + ["idle_unattributed_ns"]

THREAD_GIL_COLUMNS = [
    "name",
    "gil_hold_ns",
    "gil_wait_ns",
    "gil_wait_count",
    "gil_wait_p50_ns",
    "gil_wait_p99_ns",
    "gil_wait_max_ns",
]
OS_SUMMARY_COLUMNS = ["count", "total_ns", "avg_ns", "median_ns", "max_ns"]
GPU_METRIC_SUMMARY_COLUMNS = ["sample_count", "mean", "min", "max", "p50", "p90", "p99"]


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _tables(con: sqlite3.Connection) -> set[str]:
    return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in con.execute(f'PRAGMA table_info("{table}")')}


def _strings(con: sqlite3.Connection, tables: set[str]) -> dict[int, str]:
    return dict(con.execute("SELECT id, value FROM StringIds")) if "StringIds" in tables else {}


# ----------------------------------------------------------------------------------------------------
# Threads, GIL


def thread_names(path: str) -> dict[tuple[int, int], Optional[str]]:
    """(pid, tid) -> name from ``ThreadNames`` (nameId -> StringIds); the highest rowid wins."""
    con = _connect(path)
    try:
        tables = _tables(con)
        if "ThreadNames" not in tables:
            return {}
        strings = _strings(con, tables)
        out = {}
        for name_id, gtid in con.execute("SELECT nameId, globalTid FROM ThreadNames ORDER BY rowid"):
            if gtid is not None:
                out[(decode_pid(gtid), decode_tid(gtid))] = strings.get(name_id)
        return out
    finally:
        con.close()


def _gil_domains(con: sqlite3.Connection, strings: dict[int, str]) -> set[tuple[int, int]]:
    """(pid, domainId) of every domain created with the name ``GIL Trace``."""
    found = set()
    for domain_id, gtid, text, text_id in con.execute(
        "SELECT domainId, globalTid, text, textId FROM NVTX_EVENTS WHERE eventType = ?",
        [reference.NVTX_DOMAIN_CREATE],
    ):
        name = text if text is not None else strings.get(text_id)
        if name == GIL_DOMAIN and gtid is not None and domain_id is not None:
            found.add((decode_pid(gtid), domain_id))
    return found


def gil_intervals(path: str) -> list[dict[str, Any]]:
    """Every GIL range (state ``hold`` | ``wait``): pid, tid, state, start_ns, end_ns; sorted."""
    con = _connect(path)
    try:
        tables = _tables(con)
        if "NVTX_EVENTS" not in tables:
            return []
        strings = _strings(con, tables)
        domains = _gil_domains(con, strings)
        rows = []
        for start, end, event_type, text, text_id, gtid, domain_id in con.execute(
            "SELECT start, end, eventType, text, textId, globalTid, domainId FROM NVTX_EVENTS"
        ):
            if event_type not in NVTX_RANGE_TYPES or end is None or gtid is None:
                continue
            pid = decode_pid(gtid)
            if (pid, domain_id) not in domains:
                continue
            label = strings.get(text_id) if text_id is not None else text
            state = GIL_STATES.get(label or "")
            if state is None:
                continue
            rows.append(
                {"pid": pid, "tid": decode_tid(gtid), "state": state, "start_ns": start, "end_ns": end}
            )
        return sorted(rows, key=lambda r: (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["state"]))
    finally:
        con.close()


def thread_gil(path: str) -> dict[tuple[int, int], dict[str, Any]]:
    """(pid, tid) -> the ``thread_gil`` row, for every thread with at least one GIL range."""
    names = thread_names(path)
    holds: dict[tuple[int, int], list[int]] = defaultdict(list)
    waits: dict[tuple[int, int], list[int]] = defaultdict(list)
    threads = set()
    for r in gil_intervals(path):
        key = (r["pid"], r["tid"])
        threads.add(key)
        (holds if r["state"] == "hold" else waits)[key].append(r["end_ns"] - r["start_ns"])
    out = {}
    for key in sorted(threads):
        w = waits.get(key, [])
        out[key] = {
            "name": names.get(key),
            "gil_hold_ns": sum(holds.get(key, [])),
            "gil_wait_ns": sum(w),
            "gil_wait_count": len(w),
            "gil_wait_p50_ns": percentile(w, 50),
            "gil_wait_p99_ns": percentile(w, 99),
            "gil_wait_max_ns": max(w) if w else None,
        }
    return out


def user_nvtx_ranges(ex: Export) -> list[NvtxRange]:
    """The export's NVTX ranges without the GIL domain's, push/pop levels recomputed over what is left.

    (reference.py names a range's domain by the (pid, domainId) NvtxDomainCreate text, so the GIL domain's
    ranges are exactly those with ``domain == 'GIL Trace'``.)
    """
    kept = [
        NvtxRange(r.rowid, r.pid, r.tid, r.start, r.end, r.name, r.domain, r.kind)
        for r in ex.nvtx
        if r.domain != GIL_DOMAIN
    ]
    by_thread: dict[tuple[int, int], list[NvtxRange]] = defaultdict(list)
    for r in kept:
        if r.kind == "push_pop":
            by_thread[(r.pid, r.tid)].append(r)
    for ranges in by_thread.values():
        stack: list[NvtxRange] = []
        for r in sorted(ranges, key=lambda x: (x.start, -x.end)):
            while stack and stack[-1].end <= r.start:
                stack.pop()
            r.level = len(stack)
            stack.append(r)
    return kept


# ----------------------------------------------------------------------------------------------------
# OS runtime calls


def os_calls(path: str) -> list[dict[str, Any]]:
    """``OSRT_API`` rows of eventClass 27: pid, tid (None when globalTid is NULL), name, start_ns, end_ns."""
    con = _connect(path)
    try:
        tables = _tables(con)
        if "OSRT_API" not in tables:
            return []
        strings = _strings(con, tables)
        where = " WHERE eventClass = 27" if "eventClass" in _columns(con, "OSRT_API") else ""
        rows = []
        for gtid, name_id, start, end in con.execute(
            f"SELECT globalTid, nameId, start, end FROM OSRT_API{where}"
        ):
            rows.append(
                {
                    "pid": decode_pid(gtid) if gtid is not None else None,
                    "tid": decode_tid(gtid) if gtid is not None else None,
                    "name": strings.get(name_id),
                    "start_ns": start,
                    "end_ns": end,
                }
            )
        return sorted(
            rows, key=lambda r: (r["start_ns"], r["end_ns"], r["pid"] or 0, r["tid"] or 0, r["name"] or "")
        )
    finally:
        con.close()


def os_call_summary(path: str) -> dict[Optional[str], dict[str, Any]]:
    """name -> count, total_ns, avg_ns, median_ns, min_ns, max_ns (``nsys stats --report osrtsum``)."""
    groups: dict[Optional[str], list[int]] = defaultdict(list)
    for r in os_calls(path):
        groups[r["name"]].append(r["end_ns"] - r["start_ns"])
    out = {}
    for name, durations in groups.items():
        total = sum(durations)
        out[name] = {
            "count": len(durations),
            "total_ns": total,
            "avg_ns": total / len(durations),
            "median_ns": median(durations),
            "min_ns": min(durations),
            "max_ns": max(durations),
        }
    return out


# ----------------------------------------------------------------------------------------------------
# Idle-gap attribution


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of half-open intervals as sorted, disjoint, non-touching intervals (empty ones dropped)."""
    out: list[list[int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def clip(union: list[tuple[int, int]], starts: list[int], a: int, b: int) -> list[tuple[int, int]]:
    """The pieces of a merged union (``starts`` = its starts) inside ``[a, b)``."""
    i = max(bisect.bisect_right(starts, a) - 1, 0)
    pieces = []
    while i < len(union) and union[i][0] < b:
        s, e = max(union[i][0], a), min(union[i][1], b)
        if e > s:
            pieces.append((s, e))
        i += 1
    return pieces


@dataclass
class ThreadStates:
    """The merged state intervals of one thread: {state: (union, starts of the union)}."""

    unions: dict[str, tuple[list[tuple[int, int]], list[int]]] = field(default_factory=dict)

    def pieces(self, state: str, a: int, b: int) -> list[tuple[int, int]]:
        if state not in self.unions:
            return []
        union, starts = self.unions[state]
        return clip(union, starts, a, b)


def thread_states(
    ex: Export, gil: list[dict[str, Any]], oscalls: list[dict[str, Any]]
) -> dict[tuple[int, int], ThreadStates]:
    """(pid, tid) -> the thread's sync / gil_wait / os / cuda_api intervals, merged."""
    raw: dict[tuple[int, int], dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for call in ex.api_calls:
        state = "sync" if "Synchronize" in call.name else "cuda_api"
        raw[(call.pid, call.tid)][state].append((call.start, call.end))
    for r in gil:
        if r["state"] == "wait":
            raw[(r["pid"], r["tid"])]["gil_wait"].append((r["start_ns"], r["end_ns"]))
    for r in oscalls:
        if r["pid"] is not None:
            raw[(r["pid"], r["tid"])]["os"].append((r["start_ns"], r["end_ns"]))
    out = {}
    for key, states in raw.items():
        ts = ThreadStates()
        for state, intervals in states.items():
            union = merge(intervals)
            ts.unions[state] = (union, [s for s, _ in union])
        out[key] = ts
    return out


def attribute_gap(a: int, b: int, states: Optional[ThreadStates]) -> dict[str, int]:
    """The five idle state times of one gap ``[a, b)`` for a launching thread with ``states``."""
    result = {s: 0 for s in IDLE_STATES}
    pieces = {s: (states.pieces(s, a, b) if states else []) for s in IDLE_STATES[:-1]}
    cuts = sorted({a, b} | {t for ps in pieces.values() for piece in ps for t in piece})
    for lo, hi in zip(cuts, cuts[1:]):
        # the state is constant on [lo, hi): no piece starts or ends strictly inside it
        chosen = "other"
        for state in IDLE_STATES[:-1]:
            if any(s <= lo < e for s, e in pieces[state]):
                chosen = state
                break
        result[chosen] += hi - lo
    return result


@dataclass
class Activity:
    """A GPU activity (kernel or graph execution) and its launching call."""

    start: int
    end: int
    api: Optional[ApiCall]
    kind: str
    correlation_id: Optional[int]


def next_activity(candidates: list[Activity]) -> Optional[Activity]:
    """Among the activities starting at a gap's end: the matched one whose call started first, else None."""
    matched = [c for c in candidates if c.api is not None]
    if not matched:
        return None

    def order(c: Activity) -> tuple[int, int, int, int]:
        assert c.api is not None
        corr = c.api.correlation_id
        return (c.api.start, c.api.pid, c.api.tid, corr if corr is not None else -1)

    return min(matched, key=order)


def idle_attribution(path: str) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """Per device totals ({device: {idle_*_ns, gap_total_ns}}) and per gap rows ({device: [row]}).

    A gap row: start_ns, end_ns, duration_ns, the six idle columns, and (not in the contract, for debugging)
    ``pid``/``tid`` of the launching thread and ``next_kind`` of the next activity (None when unattributed).
    """
    return _compute(path).idle_devices, _compute(path).idle_gaps


def _idle(
    ex: Export, gil: list[dict[str, Any]], oscalls: list[dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]], dict[int, dict[str, Any]]]:
    states = thread_states(ex, gil, oscalls)
    devices = sorted(
        {k.device_id for k in ex.kernels}
        | {m.device_id for m in ex.memops}
        | {g.device_id for g in ex.graph_traces}
    )
    totals: dict[int, dict[str, Any]] = {}
    per_gap: dict[int, list[dict[str, Any]]] = {}
    metrics: dict[int, dict[str, Any]] = {}
    for dev in devices:
        kernels = [k for k in ex.kernels if k.device_id == dev]
        graphs = [g for g in ex.graph_traces if g.device_id == dev]
        m = reference.activity_metrics(kernels, [x for x in ex.memops if x.device_id == dev], graphs)
        metrics[dev] = m
        starting: dict[int, list[Activity]] = defaultdict(list)
        for k in kernels:
            if k.end > k.start:
                starting[k.start].append(Activity(k.start, k.end, k.api, "kernel", k.correlation_id))
        for g in graphs:
            if g.end > g.start:
                starting[g.start].append(Activity(g.start, g.end, g.api, "graph", g.correlation_id))
        rows = []
        for a, b in m["_gaps"]:
            nxt = next_activity(starting[b])
            row: dict[str, Any] = {"start_ns": a, "end_ns": b, "duration_ns": b - a}
            if nxt is None:
                row.update({f"idle_{s}_ns": 0 for s in IDLE_STATES})
                row["idle_unattributed_ns"] = b - a
                row.update(pid=None, tid=None, next_kind=None)
            else:
                assert nxt.api is not None
                times = attribute_gap(a, b, states.get((nxt.api.pid, nxt.api.tid)))
                row.update({f"idle_{s}_ns": t for s, t in times.items()})
                row["idle_unattributed_ns"] = 0
                row.update(pid=nxt.api.pid, tid=nxt.api.tid, next_kind=nxt.kind)
            assert sum(row[c] for c in IDLE_COLUMNS) == b - a
            rows.append(row)
        per_gap[dev] = rows
        totals[dev] = {c: sum(r[c] for r in rows) for c in IDLE_COLUMNS}
        totals[dev]["gap_total_ns"] = m["gap_total_ns"]
    return totals, per_gap, metrics


# ----------------------------------------------------------------------------------------------------
# GPU metrics


def gpu_metrics(path: str) -> list[tuple[int, Optional[str], int, int]]:
    """Every sample as (device_id, metric, ts_ns, value), sorted."""
    con = _connect(path)
    try:
        tables = _tables(con)
        if "GPU_METRICS" not in tables:
            return []
        names: dict[tuple[int, int], str] = {}
        if "TARGET_INFO_GPU_METRICS" in tables:
            for type_id, metric_id, name in con.execute(
                "SELECT typeId, metricId, metricName FROM TARGET_INFO_GPU_METRICS"
            ):
                names[(type_id, metric_id)] = name
        out = []
        for type_id, metric_id, ts, value in con.execute(
            "SELECT typeId, metricId, timestamp, value FROM GPU_METRICS"
        ):
            out.append((type_id & 0xFF, names.get((type_id, metric_id)), ts, value))
        return sorted(out, key=lambda s: (s[0], s[1] or "", s[2], s[3]))
    finally:
        con.close()


def gpu_metric_summary(path: str) -> dict[tuple[int, Optional[str]], dict[str, Any]]:
    """(device, metric) -> sample_count, mean, min, max, p50, p90, p99 of the values."""
    groups: dict[tuple[int, Optional[str]], list[int]] = defaultdict(list)
    for dev, metric, _, value in gpu_metrics(path):
        groups[(dev, metric)].append(value)
    return {
        key: {
            "sample_count": len(v),
            "mean": sum(v) / len(v),
            "min": min(v),
            "max": max(v),
            "p50": percentile(v, 50),
            "p90": percentile(v, 90),
            "p99": percentile(v, 99),
        }
        for key, v in groups.items()
    }


def range_devices(ex: Export, ranges: list[NvtxRange]) -> list[set[int]]:
    """For each range, the devices of the GPU operations it projects onto (nvtx_projection's rule)."""
    ops = [(k.api, k.device_id) for k in ex.kernels if k.api is not None]
    ops += [(m.api, m.device_id) for m in ex.memops if m.api is not None]
    ops += [(g.api, g.device_id) for g in ex.graph_traces if g.api is not None]
    by_thread: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for api, dev in ops:
        by_thread[(api.pid, api.tid)].append((api.start, dev))
    out = []
    for r in ranges:
        out.append({dev for start, dev in by_thread.get((r.pid, r.tid), []) if r.start <= start < r.end})
    return out


def _nvtx_gpu_metrics(
    ex: Export, projection: list[dict[str, Any]], samples: list[tuple[int, Optional[str], int, int]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    by_device: dict[int, dict[Optional[str], list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for dev, metric, ts, value in samples:
        by_device[dev][metric].append((ts, value))
    for metrics in by_device.values():
        for series in metrics.values():
            series.sort()
    devices_of = range_devices(ex, ex.nvtx)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r, devs in zip(projection, devices_of):
        if r["gpu_start_ns"] is None:
            continue
        lo, hi = r["gpu_start_ns"], r["gpu_end_ns"]
        values: dict[Optional[str], list[int]] = defaultdict(list)
        for dev in devs:
            for metric, series in by_device.get(dev, {}).items():
                values[metric]  # a row even with no sample in the window
                i = bisect.bisect_left(series, (lo, -(1 << 62)))
                while i < len(series) and series[i][0] < hi:
                    values[metric].append(series[i][1])
                    i += 1
        for metric, v in values.items():
            key = (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"], metric)
            out[key] = {"samples": len(v), "mean": sum(v) / len(v) if v else None}
    return out


def nvtx_gpu_metrics(path: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(pid, tid, start_ns, end_ns, name, metric) of a user range -> {mean, samples}."""
    return _compute(path).nvtx_gpu_metrics


# ----------------------------------------------------------------------------------------------------
# Everything at once


@dataclass
class HostReference:
    """Every issue-15 answer for one export (plus what the tests need around them)."""

    export: Export  # ``nvtx`` holds the user ranges only
    all_range_count: int  # ranges reference.read_export found (user + GIL domain)
    gil_intervals: list[dict[str, Any]]
    thread_gil: dict[tuple[int, int], dict[str, Any]]
    os_calls: list[dict[str, Any]]
    os_call_summary: dict[Optional[str], dict[str, Any]]
    idle_devices: dict[int, dict[str, Any]]
    idle_gaps: dict[int, list[dict[str, Any]]]
    device_metrics: dict[int, dict[str, Any]]  # reference.activity_metrics per device
    nvtx_projection: list[dict[str, Any]]  # over the user ranges
    gpu_metrics: list[tuple[int, Optional[str], int, int]]
    gpu_metric_summary: dict[tuple[int, Optional[str]], dict[str, Any]]
    nvtx_gpu_metrics: dict[tuple[Any, ...], dict[str, Any]]


_cache: dict[str, HostReference] = {}


def _compute(path: str) -> HostReference:
    path = str(path)
    if path not in _cache:
        _cache[path] = compute(path)
    return _cache[path]


def compute(path: str) -> HostReference:
    """Compute every issue-15 table of the export at ``path`` (not cached; ``_compute`` caches)."""
    path = str(path)
    ex = reference.read_export(path)
    all_ranges = len(ex.nvtx)
    ex.nvtx = user_nvtx_ranges(ex)
    gil = gil_intervals(path)
    oscalls = os_calls(path)
    totals, per_gap, metrics = _idle(ex, gil, oscalls)
    projection = reference.nvtx_projection(ex)
    samples = gpu_metrics(path)
    return HostReference(
        export=ex,
        all_range_count=all_ranges,
        gil_intervals=gil,
        thread_gil=thread_gil(path),
        os_calls=oscalls,
        os_call_summary=os_call_summary(path),
        idle_devices=totals,
        idle_gaps=per_gap,
        device_metrics=metrics,
        nvtx_projection=projection,
        gpu_metrics=samples,
        gpu_metric_summary=gpu_metric_summary(path),
        nvtx_gpu_metrics=_nvtx_gpu_metrics(ex, projection, samples),
    )
