"""Host-side evidence (issue 15): the GIL per thread, OS runtime calls, idle-gap attribution, GPU metrics.

Inputs: two real H200 captures (``llm_threads4_gil_osrt``: 4 Python agent threads, ``-t python-gil,osrt``,
278,310 GIL ranges, 92,151 OS calls; ``known_gpumetrics_osrt``: 167,002 GPU metric samples, 779 OS calls,
CUDA graphs), ``small_matmul`` (none of these tables), a copy of ``known_gpumetrics_osrt`` with its OSRT and
GPU-metric tables dropped, and ``edges``: a small export built here from a copy of ``known_gpumetrics_osrt``
(its schema and metadata) whose events are replaced by a hand-made timeline with hand-computed answers:
a gap whose next kernel has no matched launch, states overlapping the gaps' edges, a tie between two
kernels starting at the gap's end (and a zero-length one), a graph execution ending a gap, a launching
thread with no GIL ranges, a thread that holds but never waits, GIL ranges crossing user ranges, GPU metric
samples on the window's edges and on a second device, a range whose GPU window has no sample.

Definitions and what the exports hold: docs/dev/host-evidence-notes.md; the plain-Python reference:
tests/reference_host.py. Every column of every new table is compared exactly with it (idle columns are exact
integers; floats within 1e-9 relative). Product tests fail until issue 15 is built: ``xfail(strict=True)``,
so each one turns red when it starts passing and its mark must go. The reference's own invariants, its
agreement with ``nsys stats --report osrtsum`` and with SQL, and its answers on the hand-made export carry no
mark.
"""

from __future__ import annotations

import csv
import math
import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import reference
import reference_host as rh
from export_builder import global_pid, global_tid
from nsys_oracle import run_stats

GIL = "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite"
GPUMETRICS = "known_gpumetrics_osrt_h200_nsys2025.3.sqlite"
NO_HOST = "small_matmul_h100_nsys2025.3.sqlite"
# A real serving stack (`transformers serve`, eager and continuous batching + CUDA graphs), one chat request
# each, traced with -t cuda,nvtx,osrt,python-gil through an nsys session by the sweep runner.
SERVE_PLAIN = "transformers_serve_plain_h200_nsys2025.3.sqlite"
SERVE_CB = "transformers_serve_cb_graphs_h200_nsys2025.3.sqlite"
DROPPED = "dropped"  # GPUMETRICS without OSRT_API, OSRT_CALLCHAINS, GPU_METRICS, TARGET_INFO_GPU_METRICS
EDGES = "edges"  # the hand-made export (build_edges)
SYNTH_GIL = "synth_gil"  # traceforge synth: GIL ranges over 4 threads, OS calls, GPU metrics, 2 devices
SYNTH_NVTX = "synth_nvtx"  # traceforge synth: nested user NVTX ranges and GPU metrics, no GIL
ALL = [GIL, GPUMETRICS, NO_HOST, DROPPED, EDGES, SYNTH_GIL, SYNTH_NVTX, SERVE_PLAIN, SERVE_CB]

NOT_YET = pytest.mark.xfail(strict=True, reason="issue 15: not implemented yet")


def ident(name: str) -> str:
    return name.split("_h2")[0].split("_h1")[0] if name.endswith(".sqlite") else name


def files(*names: str, failing: tuple[str, ...] = ()) -> list[Any]:
    """``names`` as parameters, the ``failing`` ones marked xfail (strict)."""
    return [
        pytest.param(n, marks=NOT_YET, id=ident(n)) if n in failing else pytest.param(n, id=ident(n))
        for n in names
    ]


# ----------------------------------------------------------------------------------------------------
# The hand-made export

PID = 989  # the process of known_gpumetrics_osrt, whose schema and metadata the edges export keeps
A, B, C = 989, 1004, 1008  # threads: A main (GIL), B (holds, never waits), C (no GIL ranges)
TYPE0 = 0x0001_0001_0000_0000  # GPU_METRICS typeId of GPU 0 in the real export; | 1 = GPU 1
CLEARED = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_GRAPH_TRACE",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "CUDA_GRAPH_EVENTS",
    "NVTX_EVENTS",
    "OSRT_API",
    "GPU_METRICS",
    "TARGET_INFO_GPU_METRICS",
    "ThreadNames",
)

#: (thread, name, start, end, correlationId)
EDGE_API = [
    (A, "cudaLaunchKernel_v7000", 50, 60, 1),
    (A, "cudaStreamSynchronize_v3020", 150, 300, 10),
    (A, "cudaLaunchKernel_v7000", 900, 990, 2),
    (A, "cudaLaunchKernel_v7000", 2200, 2210, 6),
    (C, "cudaLaunchKernel_v7000", 1200, 1300, 3),
    (C, "cudaLaunchKernel_v7000", 2000, 2001, 7),
    (B, "cudaStreamSynchronize_v3020", 2100, 2290, 11),
    (B, "cudaLaunchKernel_v7000", 2300, 2310, 5),
    (B, "cudaGraphLaunch_v10000", 2900, 2950, 8),
]
#: (start, end, stream, correlationId); corr 99 has no API call; K7 is zero-length
EDGE_KERNELS = [
    (100, 200, 13, 1),
    (1000, 1100, 13, 2),
    (1500, 1600, 13, 3),
    (2000, 2100, 13, 99),
    (2500, 2600, 13, 5),
    (2500, 2550, 14, 6),
    (2500, 2500, 13, 7),
]
EDGE_GRAPHS = [(3000, 3100, 13, 8)]
#: (thread, label, start, end)
EDGE_GIL = [
    (A, "Holding GIL", 0, 50),  # crosses the user range "step" [40, 1000)
    (A, "Waiting for GIL", 250, 450),
    (A, "Holding GIL", 600, 900),
    (A, "Waiting for GIL", 1100, 1350),
    (A, "Waiting for GIL", 2150, 2450),
    (B, "Holding GIL", 2310, 2400),
]
#: user ranges (thread, text, start, end)
EDGE_USER = [(A, "step", 40, 1000), (A, "inner", 45, 70), (B, "late", 2290, 3000)]
#: (thread, name, start, end, eventClass); the class-31 row is nsys' zero-length "OSRT start" marker
EDGE_OS = [
    (A, "poll", 400, 600, 27),
    (A, "read", 950, 1050, 27),
    (B, "poll", 2500, 2700, 27),
    (0, "[Unknown]", 0, 0, 31),
]
#: (device, ts, value) of metric "M1"
EDGE_SAMPLES = [
    (0, -10, 1),
    (0, 100, 2),
    (0, 500, 4),
    (0, 1099, 8),
    (0, 1100, 16),
    (0, 5000, 32),
    (1, 500, 64),
]
EDGE_THREAD_NAMES = [(A, "python3"), (C, "worker-c")]

#: What the definitions give on the edges export, computed by hand.
EDGE_GAPS = [
    # start, end: sync, gil_wait, os, cuda_api, other, unattributed
    ((200, 1000), (100, 150, 200, 50, 300, 0)),  # A: sync over the left edge, read over the right edge
    ((1100, 1500), (0, 0, 0, 100, 300, 0)),  # C (no GIL); A's wait [1100, 1350) is not C's
    ((1600, 2000), (0, 0, 0, 0, 0, 400)),  # next kernel corr 99: no matched launch
    ((2100, 2500), (0, 300, 0, 0, 100, 0)),  # tie at 2500: A's call (2200) before B's (2300); K7 is empty
    ((2600, 3000), (0, 0, 100, 50, 250, 0)),  # a graph execution, launched by B; B's poll over the left edge
]
EDGE_DEVICE_IDLE = dict(zip(rh.IDLE_COLUMNS, (100, 450, 300, 200, 950, 400)))
EDGE_THREAD_GIL = {
    (PID, A): {
        "name": "python3",
        "gil_hold_ns": 350,
        "gil_wait_ns": 750,
        "gil_wait_count": 3,
        "gil_wait_p50_ns": 250.0,
        "gil_wait_p99_ns": 299.0,
        "gil_wait_max_ns": 300,
    },
    (PID, B): {
        "name": None,
        "gil_hold_ns": 90,
        "gil_wait_ns": 0,
        "gil_wait_count": 0,
        "gil_wait_p50_ns": None,
        "gil_wait_p99_ns": None,
        "gil_wait_max_ns": None,
    },
}
EDGE_OS_SUMMARY = {
    "poll": {"count": 2, "total_ns": 400, "avg_ns": 200.0, "median_ns": 200.0, "max_ns": 200},
    "read": {"count": 1, "total_ns": 100, "avg_ns": 100.0, "median_ns": 100.0, "max_ns": 100},
}
EDGE_METRIC_SUMMARY = {
    (0, "M1"): {"sample_count": 6, "mean": 10.5, "min": 1, "max": 32, "p50": 6.0, "p90": 24.0, "p99": 31.2},
    (1, "M1"): {"sample_count": 1, "mean": 64.0, "min": 64, "max": 64, "p50": 64.0, "p90": 64.0, "p99": 64.0},
}
#: (range name, level, gpu_start, gpu_end) -> (samples, mean) of M1 on device 0 only
EDGE_RANGES = {
    "step": (0, 100, 1100, 3, 14 / 3),  # samples at 100, 500, 1099 (1100 is the window's open end)
    "inner": (1, 100, 200, 1, 2.0),
    "late": (0, 2500, 3100, 0, None),  # K5 and the graph execution; no sample in [2500, 3100)
}


def _template_row(con: sqlite3.Connection, table: str) -> dict[str, Any]:
    cur = con.execute(f'SELECT * FROM "{table}" LIMIT 1')
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    assert row is not None, f"template {table} is empty"
    return dict(zip(names, row))


def _insert(con: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    cols = ", ".join(f'"{c}"' for c in row)
    con.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(row))})', list(row.values()))


def build_edges(template: Path, out: Path) -> Path:
    """Copy ``template`` (known_gpumetrics_osrt) to ``out``; replace its events with the EDGE_* timeline."""
    shutil.copyfile(template, out)
    con = sqlite3.connect(out)
    try:
        kernel = _template_row(con, "CUPTI_ACTIVITY_KIND_KERNEL")
        api = _template_row(con, "CUPTI_ACTIVITY_KIND_RUNTIME")
        graph = _template_row(con, "CUPTI_ACTIVITY_KIND_GRAPH_TRACE")
        osrt = _template_row(con, "OSRT_API")
        source_id = _template_row(con, "TARGET_INFO_GPU_METRICS")["sourceId"]
        for table in CLEARED:
            con.execute(f'DELETE FROM "{table}"')
        strings = {v: k for k, v in con.execute("SELECT id, value FROM StringIds")}

        def sid(text: str) -> int:
            if text not in strings:
                strings[text] = con.execute("SELECT max(id) + 1 FROM StringIds").fetchone()[0]
                con.execute("INSERT INTO StringIds (id, value) VALUES (?, ?)", [strings[text], text])
            return strings[text]

        for tid, name, start, end, corr in EDGE_API:
            _insert(
                con,
                "CUPTI_ACTIVITY_KIND_RUNTIME",
                {
                    **api,
                    "start": start,
                    "end": end,
                    "correlationId": corr,
                    "globalTid": global_tid(PID, tid),
                    "nameId": sid(name),
                },
            )
        for start, end, stream, corr in EDGE_KERNELS:
            _insert(
                con,
                "CUPTI_ACTIVITY_KIND_KERNEL",
                {
                    **kernel,
                    "start": start,
                    "end": end,
                    "streamId": stream,
                    "correlationId": corr,
                    "globalPid": global_pid(PID),
                    "deviceId": 0,
                },
            )
        for start, end, stream, corr in EDGE_GRAPHS:
            _insert(
                con,
                "CUPTI_ACTIVITY_KIND_GRAPH_TRACE",
                {
                    **graph,
                    "start": start,
                    "end": end,
                    "streamId": stream,
                    "correlationId": corr,
                    "globalPid": global_pid(PID),
                    "deviceId": 0,
                },
            )
        nvtx = (
            "INSERT INTO NVTX_EVENTS (start, end, eventType, text, textId, globalTid, domainId)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        con.execute(
            nvtx, [-100, None, reference.NVTX_DOMAIN_CREATE, rh.GIL_DOMAIN, None, global_tid(PID, A), 1]
        )
        for tid, label, start, end in EDGE_GIL:
            con.execute(nvtx, [start, end, 59, None, sid(label), global_tid(PID, tid), 1])
        for tid, text, start, end in EDGE_USER:
            con.execute(nvtx, [start, end, 59, text, None, global_tid(PID, tid), 0])
        for tid, name, start, end, event_class in EDGE_OS:
            _insert(
                con,
                "OSRT_API",
                {
                    **osrt,
                    "start": start,
                    "end": end,
                    "eventClass": event_class,
                    "globalTid": global_tid(PID, tid),
                    "nameId": 0 if name == "[Unknown]" else sid(name),
                    "nestingLevel": 0 if event_class == 27 else None,
                },
            )
        for dev in (0, 1):
            con.execute(
                "INSERT INTO TARGET_INFO_GPU_METRICS (typeId, sourceId, typeName, metricId, metricName)"
                " VALUES (?, ?, '', 0, 'M1')",
                [TYPE0 | dev, source_id],
            )
        for dev, ts, value in EDGE_SAMPLES:
            con.execute(
                "INSERT INTO GPU_METRICS (rawTimestamp, timestamp, typeId, metricId, value)"
                " VALUES (?, ?, ?, 0, ?)",
                [ts, ts, TYPE0 | dev, value],
            )
        for tid, name in EDGE_THREAD_NAMES:
            con.execute(
                "INSERT INTO ThreadNames (nameId, priority, globalTid) VALUES (?, 20, ?)",
                [sid(name), global_tid(PID, tid)],
            )
        con.commit()
    finally:
        con.close()
    return out


def build_dropped(template: Path, out: Path) -> Path:
    """Copy ``template`` and drop every table issue 15 reads that it has (OSRT, GPU metrics)."""
    shutil.copyfile(template, out)
    con = sqlite3.connect(out)
    try:
        for table in ("OSRT_API", "OSRT_CALLCHAINS", "GPU_METRICS", "TARGET_INFO_GPU_METRICS"):
            con.execute(f'DROP TABLE IF EXISTS "{table}"')
        con.commit()
    finally:
        con.close()
    return out


# ----------------------------------------------------------------------------------------------------
# Cases: an export, its reference and (lazily) its ingest


_refs: dict[str, rh.HostReference] = {}


@dataclass
class Case:
    name: str
    export: Path
    _ingested: Callable[[Path], tuple[Path, str]]

    @property
    def ref(self) -> rh.HostReference:
        key = str(self.export)
        if key not in _refs:
            _refs[key] = rh.compute(key)
        return _refs[key]

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of ``query`` on the ingested trace (each ``?`` bound to its trace id), via the public API."""
        import traceforge

        db, trace_id = self._ingested(self.export)
        with traceforge.connect(db, read_only=True) as tf:
            return tf.sql(query, [trace_id] * query.count("?")).to_dicts()


@pytest.fixture(scope="module")
def case(
    real_export: Callable[[str], Path],
    ingested: Callable[[Path], tuple[Path, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], Case]:
    root = tmp_path_factory.mktemp("host_evidence")
    made: dict[str, Path] = {}

    def get(name: str) -> Case:
        if name not in made:
            if name == EDGES:
                made[name] = build_edges(real_export(GPUMETRICS), root / "edges.sqlite")
            elif name == DROPPED:
                made[name] = build_dropped(real_export(GPUMETRICS), root / "dropped.sqlite")
            elif name == SYNTH_GIL:
                from traceforge.synth import synthesize

                made[name] = synthesize(
                    root / "synth_gil.sqlite",
                    kernels=20_000,
                    devices=2,
                    streams=2,
                    seed=18,
                    nvtx_ranges=30_000,
                    gil_threads=4,
                    gpu_metrics_hz=200,
                    osrt_calls=5_000,
                )
            elif name == SYNTH_NVTX:
                from traceforge.synth import synthesize

                made[name] = synthesize(
                    root / "synth_nvtx.sqlite", kernels=20_000, seed=19, nvtx_ranges=3_001, gpu_metrics_hz=100
                )
            else:
                made[name] = real_export(name)
        return Case(name, made[name], ingested)

    return get


def same(actual: Any, expected: Any) -> bool:
    """Equal; floats within 1e-9 relative (ns sums and counts are exact integers)."""
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(actual, float) and math.isnan(actual):
            return False
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    return bool(actual == expected)


class Mismatches:
    """Collects disagreements so that one failure lists all of them."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[str] = []

    def check(self, key: Any, column: str, actual: Any, expected: Any, who: str = "traceforge") -> None:
        if not same(actual, expected):
            self.items.append(f"{key}.{column}: {who}={actual!r} expected={expected!r}")

    def add(self, text: str) -> None:
        self.items.append(text)

    def done(self) -> None:
        if self.items:
            pytest.fail(
                f"[{self.label}] {len(self.items)} disagreement(s):\n" + "\n".join(self.items[:60]),
                pytrace=False,
            )


def _compare_keyed(
    m: Mismatches, got: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]], columns: list[str]
) -> None:
    if set(got) != set(expected):
        m.add(
            f"keys: only traceforge {sorted(set(got) - set(expected), key=str)[:5]}, "
            f"only reference {sorted(set(expected) - set(got), key=str)[:5]}"
        )
    for key, e in expected.items():
        if key not in got:
            continue
        for col in columns:
            if col not in got[key]:
                m.add(f"no column {col}")
                return
            m.check(key, col, got[key][col], e[col])


def _user_range_key(r: Any) -> tuple[int, int, int, int, str]:
    if isinstance(r, dict):
        return (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"])
    return (r.pid, r.tid, r.start, r.end, r.name)


# ----------------------------------------------------------------------------------------------------
# The reference on the hand-made export: hand-computed answers (no mark)


def test_edges_reference_gaps(case: Callable[[str], Case]) -> None:
    ref = case(EDGES).ref
    assert [(g["start_ns"], g["end_ns"]) for g in ref.idle_gaps[0]] == [g for g, _ in EDGE_GAPS]
    for row, (_, expected) in zip(ref.idle_gaps[0], EDGE_GAPS):
        assert tuple(row[c] for c in rh.IDLE_COLUMNS) == expected, row
    assert [(g["tid"], g["next_kind"]) for g in ref.idle_gaps[0]] == [
        (A, "kernel"),
        (C, "kernel"),
        (None, None),
        (A, "kernel"),
        (B, "graph"),
    ]
    assert {c: ref.idle_devices[0][c] for c in rh.IDLE_COLUMNS} == EDGE_DEVICE_IDLE
    assert ref.idle_devices[0]["gap_total_ns"] == 2400 == sum(EDGE_DEVICE_IDLE.values())
    assert set(ref.idle_devices) == {0}  # device 1 only has metric samples, no activity


def test_edges_reference_gil(case: Callable[[str], Case]) -> None:
    ref = case(EDGES).ref
    assert ref.thread_gil == EDGE_THREAD_GIL  # C (no GIL ranges) has no row
    assert [(r["tid"], r["state"], r["start_ns"], r["end_ns"]) for r in ref.gil_intervals] == [
        (tid, rh.GIL_STATES[label], start, end) for tid, label, start, end in EDGE_GIL
    ]
    # GIL ranges are not user ranges, and do not count in the user ranges' nesting
    assert {r.name: r.level for r in ref.export.nvtx} == {"step": 0, "inner": 1, "late": 0}
    assert ref.all_range_count == len(EDGE_GIL) + len(EDGE_USER)


def test_edges_reference_os_and_metrics(case: Callable[[str], Case]) -> None:
    ref = case(EDGES).ref
    assert [(r["tid"], r["name"], r["start_ns"], r["end_ns"]) for r in ref.os_calls] == [
        (tid, name, s, e) for tid, name, s, e, cls in EDGE_OS if cls == 27
    ]
    assert {
        n: {c: v[c] for c in rh.OS_SUMMARY_COLUMNS} for n, v in ref.os_call_summary.items()
    } == EDGE_OS_SUMMARY
    assert ref.gpu_metrics == sorted((dev, "M1", ts, v) for dev, ts, v in EDGE_SAMPLES)
    m = Mismatches("edges gpu_metric_summary")
    _compare_keyed(m, ref.gpu_metric_summary, EDGE_METRIC_SUMMARY, rh.GPU_METRIC_SUMMARY_COLUMNS)
    m.done()
    proj = {r["name"]: r for r in ref.nvtx_projection}
    got = {k[4]: v for k, v in ref.nvtx_gpu_metrics.items()}
    for name, (_level, gpu_start, gpu_end, samples, mean) in EDGE_RANGES.items():
        assert (proj[name]["gpu_start_ns"], proj[name]["gpu_end_ns"]) == (gpu_start, gpu_end)
        assert got[name]["samples"] == samples and same(got[name]["mean"], mean), (name, got[name])
    assert len(ref.nvtx_gpu_metrics) == 3  # one metric, three ranges with a GPU projection


# ----------------------------------------------------------------------------------------------------
# The reference's invariants on every input (no mark)


@pytest.mark.parametrize("name", files(*ALL))
def test_reference_idle_sums_to_gap_total(case: Callable[[str], Case], name: str) -> None:
    """Per gap the six idle columns sum to its length; per device to gap_total_ns. Where reference.compute is
    cheap (not on the 278k-range GIL export, whose projection it computes over every GIL range), its gaps and
    gap_total_ns are the ones attributed."""
    c = case(name)
    ref = c.ref
    for dev, rows in ref.idle_gaps.items():
        for r in rows:
            assert sum(r[col] for col in rh.IDLE_COLUMNS) == r["end_ns"] - r["start_ns"] > 0
            assert all(isinstance(r[col], int) and r[col] >= 0 for col in rh.IDLE_COLUMNS)
        assert (
            sum(ref.idle_devices[dev][col] for col in rh.IDLE_COLUMNS)
            == ref.idle_devices[dev]["gap_total_ns"]
        )
        assert ref.idle_devices[dev]["gap_total_ns"] == ref.device_metrics[dev]["gap_total_ns"]
    if name != GIL:
        full = reference.compute(str(c.export))
        assert set(full.device_metrics) == set(ref.idle_devices)
        for dev, m in full.device_metrics.items():
            assert ref.idle_devices[dev]["gap_total_ns"] == m["gap_total_ns"]
            assert [(g["start_ns"], g["end_ns"]) for g in ref.idle_gaps[dev]] == full.gaps[dev]


def test_reference_gil_fixture_figures(case: Callable[[str], Case]) -> None:
    """GIL ranges are excluded from the user's ranges: 278,310 GIL + 81 user = every range of the export."""
    ref = case(GIL).ref
    assert ref.all_range_count == 278_391
    assert len(ref.gil_intervals) == 278_310
    assert Counter(r["state"] for r in ref.gil_intervals) == {"hold": 266_294, "wait": 12_016}
    assert len(ref.export.nvtx) == 81 and all(r.domain != rh.GIL_DOMAIN for r in ref.export.nvtx)
    assert Counter(r.domain for r in ref.export.nvtx) == {None: 40, "CCCL": 41}
    assert {r.level for r in ref.export.nvtx if r.domain is None} == {0}  # steps are not nested in GIL holds
    assert set(ref.thread_gil) == {(1210, t) for t in (1210, 1278, 1279, 1280, 1281)}
    assert sum(t["gil_wait_count"] for t in ref.thread_gil.values()) == 12_016
    assert len(ref.os_calls) == 92_151 and ref.gpu_metrics == []
    assert ref.idle_devices[0]["gap_total_ns"] == 1_139_985_011
    assert ref.idle_devices[0]["idle_gil_wait_ns"] == 60_935_697
    assert ref.idle_devices[0]["idle_unattributed_ns"] == 0


def test_reference_gpumetrics_fixture_figures(case: Callable[[str], Case]) -> None:
    ref = case(GPUMETRICS).ref
    assert len(ref.gpu_metrics) == 167_002 and len(ref.gpu_metric_summary) == 22
    assert {s["sample_count"] for s in ref.gpu_metric_summary.values()} == {7591}
    assert min(s[2] for s in ref.gpu_metrics) == -103_968  # negative timestamps are kept
    assert len(ref.os_calls) == 779 and ref.gil_intervals == [] and ref.thread_gil == {}
    assert len(ref.nvtx_gpu_metrics) == 71 * 22
    assert ref.idle_devices[0] == {
        "idle_sync_ns": 281_685,
        "idle_gil_wait_ns": 0,
        "idle_os_ns": 126_129,
        "idle_cuda_api_ns": 852_816,
        "idle_other_ns": 169_320,
        "idle_unattributed_ns": 0,
        "gap_total_ns": 1_429_950,
    }


@pytest.mark.parametrize("name", files(NO_HOST, DROPPED))
def test_reference_without_host_tables(case: Callable[[str], Case], name: str) -> None:
    """No OSRT, GIL or GPU-metric table: those tables are empty, idle columns come from CUDA calls alone."""
    ref = case(name).ref
    assert (
        ref.gil_intervals == [] and ref.thread_gil == {} and ref.os_calls == [] and ref.os_call_summary == {}
    )
    assert ref.gpu_metrics == [] and ref.gpu_metric_summary == {} and ref.nvtx_gpu_metrics == {}
    for totals in ref.idle_devices.values():
        assert totals["idle_gil_wait_ns"] == totals["idle_os_ns"] == 0
    if name == DROPPED:  # what changes against the original is the os share, moved to lower states
        orig = case(GPUMETRICS).ref.idle_devices[0]
        assert ref.idle_devices[0]["gap_total_ns"] == orig["gap_total_ns"]
        assert ref.idle_devices[0]["idle_sync_ns"] == orig["idle_sync_ns"]
        assert (
            ref.idle_devices[0]["idle_cuda_api_ns"] + ref.idle_devices[0]["idle_other_ns"]
            == orig["idle_cuda_api_ns"] + orig["idle_other_ns"] + orig["idle_os_ns"]
        )


# ----------------------------------------------------------------------------------------------------
# Independent oracles: nsys stats --report osrtsum (2022.4), SQL


@pytest.mark.nsys
@pytest.mark.parametrize("name", files(GIL, GPUMETRICS))
def test_os_call_summary_reference_vs_osrtsum(
    case: Callable[[str], Case], name: str, nsys_cache: Path
) -> None:
    """Count, total, min and max exactly; avg and median within nsys' rounding to 0.1 ns."""
    c = case(name)
    rows = run_stats(c.export, nsys_cache, reports=("osrtsum",))["osrtsum"]
    assert rows, "osrtsum printed nothing"
    nsys = {r["Name"]: r for r in rows}
    ref = c.ref.os_call_summary
    m = Mismatches(f"{ident(name)} osrtsum")
    if set(nsys) != set(ref):
        m.add(
            f"names: only nsys {sorted(set(nsys) - set(ref), key=str)}, "
            f"only reference {sorted(set(ref) - set(nsys), key=str)}"
        )
    for n, e in ref.items():
        if n not in nsys:
            continue
        for col, ncol in (
            ("count", "Num Calls"),
            ("total_ns", "Total Time (ns)"),
            ("min_ns", "Min (ns)"),
            ("max_ns", "Max (ns)"),
        ):
            m.check(n, col, e[col], nsys[n][ncol], who="reference")
        for col, ncol in (("avg_ns", "Avg (ns)"), ("median_ns", "Med (ns)")):
            if abs(e[col] - float(nsys[n][ncol])) > 0.05 + 1e-9:
                m.add(f"{n}.{col}: reference={e[col]!r} nsys={nsys[n][ncol]!r}")
    m.done()


def test_gpu_metric_summary_reference_vs_sql(case: Callable[[str], Case], tmp_path: Path) -> None:
    """The summary again, as one DuckDB query over the raw rows (quantile_cont is linear interpolation)."""
    import duckdb

    c = case(GPUMETRICS)
    src = sqlite3.connect(f"file:{c.export}?mode=ro", uri=True)
    try:
        raw = src.execute(
            "SELECT g.typeId & 255, t.metricName, g.value FROM GPU_METRICS g"
            " JOIN TARGET_INFO_GPU_METRICS t ON t.typeId = g.typeId AND t.metricId = g.metricId"
        ).fetchall()
    finally:
        src.close()
    path = tmp_path / "samples.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("device_id", "metric", "value"), *raw])
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW df AS SELECT * FROM read_csv('{path}', header = true,"
        " columns = {'device_id': 'INTEGER', 'metric': 'VARCHAR', 'value': 'BIGINT'})"
    )
    got = con.execute(
        "SELECT device_id, metric, count(*), avg(value), min(value), max(value), quantile_cont(value, 0.5),"
        " quantile_cont(value, 0.9), quantile_cont(value, 0.99) FROM df GROUP BY ALL"
    ).fetchall()
    sql = {(r[0], r[1]): dict(zip(rh.GPU_METRIC_SUMMARY_COLUMNS, r[2:])) for r in got}
    m = Mismatches("gpumetrics gpu_metric_summary vs SQL")
    _compare_keyed(m, sql, c.ref.gpu_metric_summary, rh.GPU_METRIC_SUMMARY_COLUMNS)
    m.done()


def test_thread_gil_reference_vs_sql(case: Callable[[str], Case]) -> None:
    """Sums, counts and maxima of the GIL export's thread_gil, straight from NVTX_EVENTS in SQL."""
    c = case(GIL)
    src = sqlite3.connect(f"file:{c.export}?mode=ro", uri=True)
    try:
        got = src.execute(
            "SELECT (e.globalTid >> 24) & 16777215, e.globalTid & 16777215,"
            " sum(CASE WHEN s.value = 'Holding GIL' THEN e.end - e.start ELSE 0 END),"
            " sum(CASE WHEN s.value = 'Waiting for GIL' THEN e.end - e.start ELSE 0 END),"
            " sum(s.value = 'Waiting for GIL'),"
            " max(CASE WHEN s.value = 'Waiting for GIL' THEN e.end - e.start END)"
            " FROM NVTX_EVENTS e JOIN StringIds s ON s.id = e.textId"
            " WHERE e.eventType = 59 AND e.domainId = (SELECT domainId FROM NVTX_EVENTS"
            "   WHERE eventType = 75 AND text = 'GIL Trace') GROUP BY 1, 2"
        ).fetchall()
    finally:
        src.close()
    cols = ["gil_hold_ns", "gil_wait_ns", "gil_wait_count", "gil_wait_max_ns"]
    sql = {(r[0], r[1]): dict(zip(cols, r[2:])) for r in got}
    m = Mismatches("llm thread_gil vs SQL")
    _compare_keyed(m, sql, c.ref.thread_gil, cols)
    # the percentiles with numpy (method="linear", its default)
    waits: dict[tuple[int, int], list[int]] = {}
    for r in c.ref.gil_intervals:
        if r["state"] == "wait":
            waits.setdefault((r["pid"], r["tid"]), []).append(r["end_ns"] - r["start_ns"])
    for key, w in waits.items():
        for q in (50, 99):
            m.check(key, f"gil_wait_p{q}_ns", c.ref.thread_gil[key][f"gil_wait_p{q}_ns"],
                    float(np.percentile(w, q)), who="reference")  # fmt: skip
    m.done()


def _sweep_attribution(a: int, b: int, intervals: dict[str, list[tuple[int, int]]]) -> dict[str, int]:
    """A second, independent attribution of ``[a, b)``: sweep the raw (unmerged) intervals of each state with
    a counter per state, and give each stretch to the first state whose counter is positive."""
    events: list[tuple[int, int, str]] = []
    for state, spans in intervals.items():
        for start, end in spans:
            start, end = max(start, a), min(end, b)
            if end > start:
                events += [(start, 1, state), (end, -1, state)]
    events.sort()
    count = dict.fromkeys(rh.IDLE_STATES, 0)
    out = dict.fromkeys(rh.IDLE_STATES, 0)
    t = a
    for time, delta, state in events + [(b, 0, "other")]:
        held = next((s for s in rh.IDLE_STATES[:-1] if count[s] > 0), "other")
        out[held] += time - t
        t = time
        count[state] += delta
    return out


@pytest.mark.parametrize("name", files(GIL, GPUMETRICS, EDGES))
def test_idle_attribution_reference_vs_sweep(case: Callable[[str], Case], name: str) -> None:
    """Every gap (every 5th on the GIL export) attributed again by a plain sweep over the launching thread's
    raw intervals, found by a linear scan: the same six numbers."""
    c = case(name)
    ref = c.ref
    per_thread: dict[tuple[int, int], dict[str, list[tuple[int, int]]]] = {}

    def spans(key: tuple[int, int]) -> dict[str, list[tuple[int, int]]]:
        if key not in per_thread:
            d: dict[str, list[tuple[int, int]]] = {s: [] for s in rh.IDLE_STATES[:-1]}
            for call in ref.export.api_calls:
                if (call.pid, call.tid) == key:
                    d["sync" if "Synchronize" in call.name else "cuda_api"].append((call.start, call.end))
            d["gil_wait"] = [(r["start_ns"], r["end_ns"]) for r in ref.gil_intervals
                             if (r["pid"], r["tid"]) == key and r["state"] == "wait"]  # fmt: skip
            d["os"] = [(r["start_ns"], r["end_ns"]) for r in ref.os_calls if (r["pid"], r["tid"]) == key]
            per_thread[key] = d
        return per_thread[key]

    m = Mismatches(f"{ident(name)} idle attribution vs sweep")
    step = 5 if name == GIL else 1
    checked = 0
    for dev, rows in ref.idle_gaps.items():
        for g in rows[::step]:
            if g["tid"] is None:
                continue
            a, b = g["start_ns"], g["end_ns"]
            window = {
                s: [iv for iv in ivs if iv[0] < b and iv[1] > a]
                for s, ivs in spans((g["pid"], g["tid"])).items()
            }
            expected = _sweep_attribution(a, b, window)
            for state in rh.IDLE_STATES:
                m.check(
                    (dev, a, b), f"idle_{state}_ns", g[f"idle_{state}_ns"], expected[state], who="reference"
                )
            checked += 1
    assert checked > 0
    m.done()


# ----------------------------------------------------------------------------------------------------
# traceforge against the reference (xfail strict until issue 15 is built)


@pytest.mark.parametrize("name", files(*ALL))
def test_gil_intervals(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = sorted(
        (r["pid"], r["tid"], r["state"], r["start_ns"], r["end_ns"])
        for r in c.rows("SELECT pid, tid, state, start_ns, end_ns FROM gil_intervals WHERE trace_id = ?")
    )
    expected = sorted(
        (r["pid"], r["tid"], r["state"], r["start_ns"], r["end_ns"]) for r in c.ref.gil_intervals
    )
    assert len(got) == len(expected)
    assert got == expected


@pytest.mark.parametrize("name", files(*ALL))
def test_thread_gil(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = {(r["pid"], r["tid"]): r for r in c.rows("SELECT * FROM thread_gil WHERE trace_id = ?")}
    m = Mismatches(f"{ident(name)} thread_gil")
    _compare_keyed(m, got, c.ref.thread_gil, rh.THREAD_GIL_COLUMNS)
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_nvtx_ranges_are_the_users(case: Callable[[str], Case], name: str) -> None:
    """nvtx_ranges keeps the user's ranges only (no GIL domain), push/pop levels over those. Passes today
    where there is no GIL trace."""
    c = case(name)
    got = {
        _user_range_key(r): r
        for r in c.rows("SELECT * FROM nvtx_ranges WHERE trace_id = ? AND kind <> 'mark'")
    }
    expected = {_user_range_key(r): r for r in c.ref.export.nvtx}
    m = Mismatches(f"{ident(name)} nvtx_ranges")
    if set(got) != set(expected):
        extra = Counter(got[k]["domain"] for k in set(got) - set(expected))
        m.add(
            f"{len(got)} ranges vs {len(expected)}; extra by domain {dict(extra)}; "
            f"missing {sorted(set(expected) - set(got))[:3]}"
        )
    for key, e in expected.items():
        if key in got:
            m.check(key, "level", got[key]["level"], e.level)
            m.check(key, "domain", got[key]["domain"], e.domain)
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_nvtx_projection_user_ranges(case: Callable[[str], Case], name: str) -> None:
    """nvtx_projection has one row per user range (GIL ranges are not projected), levels over user ranges.
    Kernel columns only: graph executions in the projection are issue 21 (test_cuda_graphs.py)."""
    c = case(name)
    got = {_user_range_key(r): r for r in c.rows("SELECT * FROM nvtx_projection WHERE trace_id = ?")}
    expected = {_user_range_key(r): r for r in c.ref.nvtx_projection}
    m = Mismatches(f"{ident(name)} nvtx_projection")
    _compare_keyed(m, got, expected, ["level", "kernel_count", "kernel_time_ns"])
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_os_calls(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = Counter(
        (r["pid"], r["tid"], r["name"], r["start_ns"], r["end_ns"])
        for r in c.rows("SELECT pid, tid, name, start_ns, end_ns FROM os_calls WHERE trace_id = ?")
    )
    expected = Counter((r["pid"], r["tid"], r["name"], r["start_ns"], r["end_ns"]) for r in c.ref.os_calls)
    assert sum(got.values()) == sum(expected.values())
    assert got == expected


@pytest.mark.parametrize("name", files(*ALL))
def test_os_call_summary(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = {r["name"]: r for r in c.rows("SELECT * FROM os_call_summary WHERE trace_id = ?")}
    m = Mismatches(f"{ident(name)} os_call_summary")
    _compare_keyed(m, got, c.ref.os_call_summary, rh.OS_SUMMARY_COLUMNS)
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_idle_device_metrics(case: Callable[[str], Case], name: str) -> None:
    """The six idle columns of device_metrics, exact integers summing to gap_total_ns."""
    c = case(name)
    got = {r["device_id"]: r for r in c.rows("SELECT * FROM device_metrics WHERE trace_id = ?")}
    m = Mismatches(f"{ident(name)} device_metrics")
    _compare_keyed(m, got, c.ref.idle_devices, rh.IDLE_COLUMNS + ["gap_total_ns"])
    for dev, r in got.items():
        if all(col in r for col in rh.IDLE_COLUMNS):
            if any(r[col] is None for col in rh.IDLE_COLUMNS):
                m.add(f"device {dev}: NULL idle column")
            elif sum(r[col] for col in rh.IDLE_COLUMNS) != r["gap_total_ns"]:
                m.add(
                    f"device {dev}: idle columns sum to {sum(r[col] for col in rh.IDLE_COLUMNS)}, "
                    f"gap_total_ns {r['gap_total_ns']}"
                )
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_idle_gaps(case: Callable[[str], Case], name: str) -> None:
    """The six idle columns of every gap."""
    c = case(name)
    got = {
        (r["device_id"], r["start_ns"], r["end_ns"]): r
        for r in c.rows("SELECT * FROM gaps WHERE trace_id = ?")
    }
    expected = {(dev, g["start_ns"], g["end_ns"]): g for dev, rows in c.ref.idle_gaps.items() for g in rows}
    m = Mismatches(f"{ident(name)} gaps")
    _compare_keyed(m, got, expected, rh.IDLE_COLUMNS)
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_gpu_metrics(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = sorted(
        (r["device_id"], r["metric"], r["ts_ns"], r["value"])
        for r in c.rows("SELECT device_id, metric, ts_ns, value FROM gpu_metrics WHERE trace_id = ?")
    )
    assert len(got) == len(c.ref.gpu_metrics)
    assert got == c.ref.gpu_metrics


@pytest.mark.parametrize("name", files(*ALL))
def test_gpu_metric_summary(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = {
        (r["device_id"], r["metric"]): r
        for r in c.rows("SELECT * FROM gpu_metric_summary WHERE trace_id = ?")
    }
    m = Mismatches(f"{ident(name)} gpu_metric_summary")
    _compare_keyed(m, got, c.ref.gpu_metric_summary, rh.GPU_METRIC_SUMMARY_COLUMNS)
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_nvtx_gpu_metrics(case: Callable[[str], Case], name: str) -> None:
    """Per user range with a GPU projection and metric: samples in [gpu_start_ns, gpu_end_ns) and their mean;
    ``range`` is nvtx_projection's range_index."""
    c = case(name)
    got = {
        (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"], r["metric"]): r
        for r in c.rows(
            "SELECT p.pid, p.tid, p.start_ns, p.end_ns, p.name, g.metric, g.mean, g.samples"
            " FROM nvtx_gpu_metrics g"
            ' JOIN nvtx_projection p ON p.trace_id = g.trace_id AND p.range_index = g."range"'
            " WHERE g.trace_id = ?"
        )
    }
    m = Mismatches(f"{ident(name)} nvtx_gpu_metrics")
    _compare_keyed(m, got, c.ref.nvtx_gpu_metrics, ["mean", "samples"])
    m.done()


# ----------------------------------------------------------------------------------------------------
# Nothing else changes (no mark: true today, must stay true)

_UNCHANGED = {
    "device_metrics": ("device_id",),
    "stream_metrics": ("device_id", "stream_id"),
    "gaps": ("device_id", "start_ns"),
    "kernel_summary": ("device_id", "name"),
    "memop_summary": ("device_id", "op", "copy_kind"),
    "nvtx_projection": ("pid", "tid", "start_ns", "end_ns", "name"),
}
_NEW_COLUMNS = set(rh.IDLE_COLUMNS) | {"trace_id", "metric_version"}


def test_dropping_host_tables_changes_nothing_else(case: Callable[[str], Case]) -> None:
    """The gpumetrics export with its OSRT and GPU-metric tables dropped gets the same existing tables."""
    full, dropped = case(GPUMETRICS), case(DROPPED)
    m = Mismatches("dropped vs gpumetrics")
    for table, key_cols in _UNCHANGED.items():
        rows = {}
        for label, c in (("full", full), ("dropped", dropped)):
            rows[label] = {
                tuple(r[k] for k in key_cols): {k: v for k, v in r.items() if k not in _NEW_COLUMNS}
                for r in c.rows(f"SELECT * FROM {table} WHERE trace_id = ?")
            }
        if rows["full"] != rows["dropped"]:
            diff = [k for k in rows["full"] if rows["full"][k] != rows["dropped"].get(k)]
            m.add(f"{table}: {len(diff)} rows differ, e.g. {diff[:2]}")
    m.done()
