"""CUDA graphs (issue 21): graph executions are GPU activities; graph_launches, graph_summary, capture mode.

Inputs are real H200 captures of one program (50 iterations of 4 concurrent kernels + 1, then 20 launches of
a 5-kernel CUDA graph) made with ``--cuda-graph-trace=graph`` (``known_graphmode``, and
``known_gpumetrics_osrt`` with GPU metrics and OS runtime tracing on) and ``--cuda-graph-trace=node``
(``known_nodemode``), plus ``small_matmul``, which launched no graph. What the exports hold:
docs/dev/cuda-graphs-notes.md.

Every new or changed column is compared exactly with the plain-Python reference (tests/reference.py, which
implements the definitions of the issue), and the two capture modes are compared with each other
structurally (same ranges, same launch counts; times within the captures' own run-to-run spread).

Tests that fail until issue 21 is implemented are marked ``xfail(strict=True)``: when one starts passing it
turns red, and its mark must be removed. Tests that pass today (node-mode kernels are already kernels; a
trace without graphs is unchanged) carry no mark.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest

import reference
from nsys_oracle import run_stats

GRAPH = "known_graphmode_h200_nsys2025.3.sqlite"
NODE = "known_nodemode_h200_nsys2025.3.sqlite"
GPUMETRICS = "known_gpumetrics_osrt_h200_nsys2025.3.sqlite"
NO_GRAPHS = "small_matmul_h100_nsys2025.3.sqlite"
# A real serving stack: `transformers serve --continuous-batching --cb-use-cuda-graph`, one chat request,
# captured through an nsys session by `traceforge run runners/transformers_serve.toml` (graph mode).
SERVE_CB = "transformers_serve_cb_graphs_h200_nsys2025.3.sqlite"
ALL = [GRAPH, NODE, GPUMETRICS, NO_GRAPHS, SERVE_CB]
# reference.py projects every NVTX range; with GIL tracing, the projection of the user's ranges is checked
# by test_host_evidence.py against reference_host.py instead.
NO_GIL = [GRAPH, NODE, GPUMETRICS, NO_GRAPHS]
GRAPH_MODE = [GRAPH, GPUMETRICS]

NOT_YET = pytest.mark.xfail(strict=True, reason="issue 21: not implemented yet")


def files(*names: str, failing: tuple[str, ...] = ()) -> list[Any]:
    """``names`` as parameters, the ``failing`` ones marked xfail (strict)."""
    return [pytest.param(n, marks=NOT_YET, id=n.split("_h")[0]) if n in failing
            else pytest.param(n, id=n.split("_h2")[0].split("_h1")[0]) for n in names]  # fmt: skip


#: Under issue 21 the timeline columns are computed over activities; kernel_count/kernel_time_ns stay kernels.
EXISTING_COLUMNS = reference.METRIC_COLUMNS
GRAPH_COLUMNS = ["graph_launch_count", "graph_ns"]
NVTX_COLUMNS = [
    "gpu_start_ns",
    "gpu_end_ns",
    "gpu_op_count",
    "launch_count",
    "kernel_count",
    "kernel_time_ns",
]
GRAPH_LAUNCH_COLUMNS = [
    "device_id",
    "stream_id",
    "graph_id",
    "graph_exec_id",
    "start_ns",
    "end_ns",
    "pid",
    "launch_tid",
    "api_start_ns",
    "launch_latency_ns",
    "kernel_count",
    "kernel_ns",
]
GRAPH_SUMMARY_COLUMNS = ["count", "total_ns", "avg_ns", "median_ns", "min_ns", "max_ns"]

#: Cross-mode tolerance on device busy time. The three captures of the same program differ by ~3% run to run:
#: kernels-only busy of the eager part is 9.74 ms (graph mode), 10.05 ms (gpumetrics) and ~10.07 ms (node
#: mode's eager part); busy over activities is 10.86 / 11.17 ms in graph mode vs 11.19 ms in node mode (-3.0%,
#: -0.2%). Without the graph executions graph mode is 13% below node mode, far outside this band.
BUSY_TOLERANCE = 0.05
#: Graph time across modes: graph-mode executions sum to 1.121 ms, node mode's executions (first kernel start
#: to last kernel end) to 1.148 ms (+2.4%: node tracing costs ~1.4 us per launch), their kernels to 1.118 ms.
GRAPH_TIME_TOLERANCE = 0.05

_refs: dict[Path, reference.Reference] = {}


@dataclass
class Case:
    name: str
    export: Path
    db: Path
    trace_id: str
    ref: reference.Reference

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of ``query`` (each ``?`` bound to this case's trace id) as dicts."""
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            cur = con.execute(query, [self.trace_id] * query.count("?"))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()


@pytest.fixture(scope="module")
def case(
    real_export: Callable[[str], Path], ingested: Callable[[Path], tuple[Path, str]]
) -> Callable[[str], Case]:
    """``case(name)``: the export ingested once through the Python API, with its reference metrics."""

    def get(name: str) -> Case:
        export = real_export(name)
        if export not in _refs:
            _refs[export] = reference.compute(str(export))
        db, trace_id = ingested(export)
        return Case(name, export, db, trace_id, _refs[export])

    return get


def same(actual: Any, expected: Any) -> bool:
    """Equal; floats with a relative tolerance of 1e-9 (sums of ns are exact integers)."""
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(actual, float) and math.isnan(actual):
            return False
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-6)
    return bool(actual == expected)


class Mismatches:
    """Collects disagreements so that one failure lists all of them."""

    def __init__(self, case: Case, table: str) -> None:
        self.case = case
        self.table = table
        self.items: list[str] = []

    def check(self, key: Any, column: str, actual: Any, expected: Any) -> None:
        if not same(actual, expected):
            self.items.append(f"{self.table}{key}.{column}: traceforge={actual!r} reference={expected!r}")

    def add(self, text: str) -> None:
        self.items.append(f"{self.table}: {text}")

    def done(self) -> None:
        if self.items:
            head = f"[{self.case.name}] {len(self.items)} disagreement(s) with tests/reference.py:\n"
            pytest.fail(head + "\n".join(self.items[:60]), pytrace=False)


def _compare_metrics(c: Case, table: str, columns: list[str]) -> None:
    key_cols = ["device_id"] if table == "device_metrics" else ["device_id", "stream_id"]
    expected_rows: dict[Any, dict[str, Any]]
    if table == "device_metrics":
        expected_rows = {(dev,): m for dev, m in c.ref.device_metrics.items()}
    else:
        expected_rows = dict(c.ref.stream_metrics.items())
    got = {tuple(r[k] for k in key_cols): r for r in c.rows(f"SELECT * FROM {table} WHERE trace_id = ?")}
    m = Mismatches(c, table)
    if set(got) != set(expected_rows):
        m.add(f"keys traceforge={sorted(got)} reference={sorted(expected_rows)}")
    for key, expected in expected_rows.items():
        if key not in got:
            continue
        for col in columns:
            if col not in got[key]:
                m.add(f"no column {col}")
                continue
            m.check(key, col, got[key][col], expected[col])
    m.done()


# ----------------------------------------------------------------------------------------------------
# device_metrics / stream_metrics / concurrency_levels / gaps over activities


@pytest.mark.parametrize("name", files(*ALL))
def test_device_metrics_over_activities(case: Callable[[str], Case], name: str) -> None:
    """Every existing device_metrics column, timeline columns over kernels + graph executions."""
    _compare_metrics(case(name), "device_metrics", EXISTING_COLUMNS)


@pytest.mark.parametrize("name", files(*ALL))
def test_stream_metrics_over_activities(case: Callable[[str], Case], name: str) -> None:
    _compare_metrics(case(name), "stream_metrics", EXISTING_COLUMNS)


@pytest.mark.parametrize("name", files(*ALL))
def test_graph_columns_device_metrics(case: Callable[[str], Case], name: str) -> None:
    """graph_launch_count (GRAPH_TRACE rows) and graph_ns (their summed durations); 0 in node mode and without
    graphs."""
    _compare_metrics(case(name), "device_metrics", GRAPH_COLUMNS)


@pytest.mark.parametrize("name", files(*ALL))
def test_graph_columns_stream_metrics(case: Callable[[str], Case], name: str) -> None:
    _compare_metrics(case(name), "stream_metrics", GRAPH_COLUMNS)


@pytest.mark.parametrize("name", files(*ALL))
def test_concurrency_levels_over_activities(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got: dict[int, dict[int, int]] = {}
    for r in c.rows("SELECT device_id, level, time_ns FROM concurrency_levels WHERE trace_id = ?"):
        if r["time_ns"]:
            got.setdefault(r["device_id"], {})[r["level"]] = r["time_ns"]
    expected = {dev: levels for dev, levels in c.ref.concurrency_levels.items() if levels}
    m = Mismatches(c, "concurrency_levels")
    for dev in sorted(set(got) | set(expected)):
        if got.get(dev) != expected.get(dev):
            m.add(f"device {dev}: traceforge={got.get(dev)} reference={expected.get(dev)}")
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_gaps_over_activities(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got: dict[int, list[tuple[int, int, int]]] = {}
    for r in c.rows("SELECT device_id, start_ns, end_ns, duration_ns FROM gaps WHERE trace_id = ?"):
        got.setdefault(r["device_id"], []).append((r["start_ns"], r["end_ns"], r["duration_ns"]))
    expected = {dev: [(s, e, e - s) for s, e in gaps] for dev, gaps in c.ref.gaps.items() if gaps}
    m = Mismatches(c, "gaps")
    for dev in sorted(set(got) | set(expected)):
        g, e = sorted(got.get(dev, [])), sorted(expected.get(dev, []))
        if g != e:
            m.add(f"device {dev}: {len(g)} gaps vs {len(e)}; extra {sorted(set(g) - set(e))[:3]}; "
                  f"missing {sorted(set(e) - set(g))[:3]}")  # fmt: skip
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_kernels_stay_kernels(case: Callable[[str], Case], name: str) -> None:
    """kernel_count, the kernels view and kernel_summary hold kernels only, in every mode (true today)."""
    c = case(name)
    m = Mismatches(c, "kernels")
    (trace,) = c.rows("SELECT kernel_count FROM traces WHERE trace_id = ?")
    m.check((), "traces.kernel_count", trace["kernel_count"], len(c.ref.export.kernels))
    (n,) = c.rows("SELECT count(*) AS n, count(graph_node_id) AS in_graphs FROM kernels WHERE trace_id = ?")
    m.check((), "count(*)", n["n"], len(c.ref.export.kernels))
    m.check((), "count(graph_node_id)", n["in_graphs"],
            sum(k.graph_node_id is not None for k in c.ref.export.kernels))  # fmt: skip
    got = {(r["device_id"], r["name"]): r for r in c.rows("SELECT * FROM kernel_summary WHERE trace_id = ?")}
    if set(got) != set(c.ref.kernel_summary):
        m.add(f"kernel_summary keys: {sorted(set(got) ^ set(c.ref.kernel_summary))[:4]}")
    for key, expected in c.ref.kernel_summary.items():
        for col in ("count", "total_ns", "min_ns", "max_ns", "share"):
            if key in got:
                m.check(key, f"kernel_summary.{col}", got[key][col], expected[col])
    m.done()


# ----------------------------------------------------------------------------------------------------
# traces.cuda_graph_trace, graph_launches, graph_summary


@pytest.mark.parametrize("name", files(*ALL))
def test_cuda_graph_trace_mode(case: Callable[[str], Case], name: str) -> None:
    """'graph' / 'node' from META_DATA_CAPTURE; NULL for small_matmul, whose META says Graph but which
    launched no graph."""
    c = case(name)
    expected = {GRAPH: "graph", GPUMETRICS: "graph", NODE: "node", NO_GRAPHS: None, SERVE_CB: "graph"}[name]
    assert c.ref.cuda_graph_trace == expected  # the reference itself
    (trace,) = c.rows("SELECT cuda_graph_trace FROM traces WHERE trace_id = ?")
    assert trace["cuda_graph_trace"] == expected


@pytest.mark.parametrize("name", files(*ALL))
def test_graph_launches_rows(case: Callable[[str], Case], name: str) -> None:
    """One row per graph execution in either mode, launch matched on (pid, correlationId); node-mode kernel
    counts."""
    c = case(name)
    got = c.rows(
        "SELECT * FROM graph_launches WHERE trace_id = ? ORDER BY device_id, start_ns, stream_id, pid"
    )
    m = Mismatches(c, "graph_launches")
    if len(got) != len(c.ref.graph_launches):
        m.add(f"{len(got)} rows vs {len(c.ref.graph_launches)} in the reference")
    for i, (g, e) in enumerate(zip(got, c.ref.graph_launches)):
        for col in GRAPH_LAUNCH_COLUMNS:
            if col not in g:
                m.add(f"no column {col}")
                continue
            m.check((i,), col, g[col], e[col])
    m.done()


@pytest.mark.parametrize("name", files(*ALL))
def test_graph_summary(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got = {
        (r["device_id"], r["graph_id"]): r for r in c.rows("SELECT * FROM graph_summary WHERE trace_id = ?")
    }
    m = Mismatches(c, "graph_summary")
    if set(got) != set(c.ref.graph_summary):
        m.add(f"keys traceforge={sorted(got)} reference={sorted(c.ref.graph_summary)}")
    for key, expected in c.ref.graph_summary.items():
        if key in got:
            for col in GRAPH_SUMMARY_COLUMNS:
                m.check(key, col, got[key].get(col), expected[col])
    m.done()


# ----------------------------------------------------------------------------------------------------
# NVTX projection


def _projection(c: Case) -> tuple[dict[tuple, dict[str, Any]], dict[tuple, dict[str, Any]]]:
    got = {(r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r
           for r in c.rows("SELECT * FROM nvtx_projection WHERE trace_id = ?")}  # fmt: skip
    expected = {(r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r for r in c.ref.nvtx_projection}
    return got, expected


@pytest.mark.parametrize("name", files(*NO_GIL))
def test_nvtx_projection_over_activities(case: Callable[[str], Case], name: str) -> None:
    """A graph execution is one GPU operation of the range whose thread launched it."""
    c = case(name)
    got, expected = _projection(c)
    m = Mismatches(c, "nvtx_projection")
    if set(got) != set(expected):
        m.add(f"ranges differ: {sorted(set(got) ^ set(expected))[:4]}")
    for key, e in expected.items():
        if key in got:
            for col in NVTX_COLUMNS:
                m.check(key, col, got[key][col], e[col])
    m.done()


@pytest.mark.parametrize("name", files(*NO_GIL))
def test_nvtx_projection_graph_ns(case: Callable[[str], Case], name: str) -> None:
    c = case(name)
    got, expected = _projection(c)
    m = Mismatches(c, "nvtx_projection")
    for key, e in expected.items():
        if key in got:
            if "graph_ns" not in got[key]:
                m.add("no column graph_ns")
                break
            m.check(key, "graph_ns", got[key]["graph_ns"], e["graph_ns"])
    m.done()


# ----------------------------------------------------------------------------------------------------
# Before issue 21: what traceforge reports on the graph-mode capture


def test_graphmode_busy_before(case: Callable[[str], Case]) -> None:
    """Print traceforge's busy/utilization on the graph-mode capture next to the reference without and with
    graph executions. Passes before and after issue 21 (traceforge must equal one of the two); the exact
    comparison is test_device_metrics_over_activities."""
    c = case(GRAPH)
    (row,) = c.rows("SELECT busy_ns, span_ns, utilization FROM device_metrics WHERE trace_id = ?")
    ex = c.ref.export
    kernels_only = reference.kernel_metrics(ex.kernels, ex.memops)
    with_graphs = c.ref.device_metrics[0]
    print(f"\ngraph mode device 0: traceforge busy_ns={row['busy_ns']} span_ns={row['span_ns']} "
          f"utilization={row['utilization']:.4f}; reference kernels only busy_ns={kernels_only['busy_ns']} "
          f"utilization={kernels_only['utilization']:.4f}; "
          f"reference with graphs busy_ns={with_graphs['busy_ns']} "
          f"span_ns={with_graphs['span_ns']} utilization={with_graphs['utilization']:.4f}")  # fmt: skip
    assert (row["busy_ns"], row["span_ns"]) in {
        (kernels_only["busy_ns"], kernels_only["span_ns"]),
        (with_graphs["busy_ns"], with_graphs["span_ns"]),
    }
    assert (
        with_graphs["busy_ns"] - kernels_only["busy_ns"] == with_graphs["graph_ns"]
    )  # graphs overlap no kernel


# ----------------------------------------------------------------------------------------------------
# Graph mode vs node mode: the same program, structurally the same answers


def _ranges(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["name"], r["level"]) for r in sorted(rows, key=lambda r: r["start_ns"])]


def _cross_mode_checks(graph: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """Problems between the two captures' answers (``graph``/``node``: busy_ns, graph_launch_count, launches,
    projection)."""
    problems = []
    ratio = graph["busy_ns"] / node["busy_ns"]
    if abs(ratio - 1) > BUSY_TOLERANCE:
        problems.append(
            f"busy_ns graph mode {graph['busy_ns']} vs node mode {node['busy_ns']}: ratio {ratio:.4f}"
        )
    if graph["graph_launch_count"] != 20 or node["graph_launch_count"] != 0:
        problems.append(
            f"graph_launch_count {graph['graph_launch_count']} / {node['graph_launch_count']}, want 20 / 0"
        )
    for who in (graph, node):
        if len(who["launches"]) != 20:
            problems.append(f"{who['mode']}: {len(who['launches'])} graph_launches rows, want 20")
    if [r["kernel_count"] for r in node["launches"]] != [5] * 20:
        problems.append(f"node-mode kernel_count per launch {[r['kernel_count'] for r in node['launches']]}")
    if any(r["kernel_count"] is not None for r in graph["launches"]):
        problems.append("graph-mode graph_launches.kernel_count should be NULL")
    if {(r["graph_id"], r["graph_exec_id"]) for r in graph["launches"]} != {
        (r["graph_id"], r["graph_exec_id"]) for r in node["launches"]
    }:
        problems.append("graph ids differ between modes")
    g_time = sum(r["end_ns"] - r["start_ns"] for r in graph["launches"])
    n_time = sum(r["end_ns"] - r["start_ns"] for r in node["launches"])
    if not n_time or abs(g_time / n_time - 1) > GRAPH_TIME_TOLERANCE:
        problems.append(f"graph execution time {g_time} vs {n_time}")
    if _ranges(graph["projection"]) != _ranges(node["projection"]):
        problems.append("NVTX ranges differ")
    else:
        gp = sorted(graph["projection"], key=lambda r: r["start_ns"])
        np_ = sorted(node["projection"], key=lambda r: r["start_ns"])
        if [r["launch_count"] for r in gp] != [r["launch_count"] for r in np_]:
            problems.append(f"launch_count per range: "
                            f"graph {Counter((r['name'], r['launch_count']) for r in gp)} "
                            f"node {Counter((r['name'], r['launch_count']) for r in np_)}")  # fmt: skip
        for g, n in zip(gp, np_):
            if g["name"] == "graph":
                if (g["gpu_op_count"], n["gpu_op_count"]) != (1, 5):
                    problems.append(
                        f"graph range gpu_op_count {g['gpu_op_count']} / {n['gpu_op_count']}, want 1 / 5"
                    )
                    break
                if (g["gpu_start_ns"] is None) or abs(
                    g["graph_ns"] / n["kernel_time_ns"] - 1
                ) > GRAPH_TIME_TOLERANCE:
                    problems.append(
                        f"graph range time: graph_ns {g['graph_ns']} vs node kernels {n['kernel_time_ns']}"
                    )
                    break
    return problems


def _reference_answers(ref: reference.Reference, mode: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "busy_ns": ref.device_metrics[0]["busy_ns"],
        "graph_launch_count": ref.device_metrics[0]["graph_launch_count"],
        "launches": ref.graph_launches,
        "projection": ref.nvtx_projection,
    }


def _traceforge_answers(c: Case, mode: str) -> dict[str, Any]:
    (dev,) = c.rows("SELECT busy_ns, graph_launch_count FROM device_metrics WHERE trace_id = ?")
    return {
        "mode": mode,
        **dev,
        "launches": c.rows("SELECT * FROM graph_launches WHERE trace_id = ? ORDER BY start_ns"),
        "projection": c.rows("SELECT * FROM nvtx_projection WHERE trace_id = ?"),
    }


@pytest.mark.parametrize("graph_name", files(*GRAPH_MODE))
def test_reference_graph_vs_node_mode(case: Callable[[str], Case], graph_name: str) -> None:
    """The reference gives both captures the same structure (validates the reference and the fixtures)."""
    problems = _cross_mode_checks(
        _reference_answers(case(graph_name).ref, "graph"), _reference_answers(case(NODE).ref, "node")
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("graph_name", files(*GRAPH_MODE))
def test_graph_vs_node_mode(case: Callable[[str], Case], graph_name: str) -> None:
    """traceforge: busy within the run-to-run spread, 20 graph launches in both, the same ranges and launch
    counts."""
    problems = _cross_mode_checks(
        _traceforge_answers(case(graph_name), "graph"), _traceforge_answers(case(NODE), "node")
    )
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------------
# The reference itself


@pytest.mark.parametrize("name", files(*ALL))
def test_reference_activities_reduce_to_kernels(case: Callable[[str], Case], name: str) -> None:
    """Without GRAPH_TRACE rows the activity metrics are exactly the kernel metrics (plus zero graph columns);
    with them, kernel columns are unchanged and busy grows by the graph time the kernels do not cover."""
    ref = case(name).ref
    ex = ref.export
    for dev, m in ref.device_metrics.items():
        kernels = [k for k in ex.kernels if k.device_id == dev]
        old = reference.kernel_metrics(kernels, [x for x in ex.memops if x.device_id == dev])
        graphs = [g for g in ex.graph_traces if g.device_id == dev]
        assert m["graph_launch_count"] == len(graphs)
        assert m["graph_ns"] == sum(g.end - g.start for g in graphs)
        if not graphs:
            assert {k: v for k, v in m.items() if k not in GRAPH_COLUMNS} == old
        else:
            for col in ("kernel_count", "kernel_time_ns", "memcpy_count", "memset_count"):
                assert m[col] == old[col]
            assert old["busy_ns"] < m["busy_ns"] <= old["busy_ns"] + m["graph_ns"]
            assert m["launch_matched"] == old["launch_matched"] + sum(g.api is not None for g in graphs)


@pytest.mark.parametrize("name", files(*GRAPH_MODE))
def test_reference_graph_trace_rows(case: Callable[[str], Case], name: str) -> None:
    """What the graph-mode exports hold: 20 executions of graph 1 / exec 2 on stream 13, each launched by a
    cudaGraphLaunch on the same (pid, correlationId) and no kernel row for the graph's kernels."""
    ex = case(name).ref.export
    assert len(ex.graph_traces) == 20
    assert {(g.device_id, g.stream_id, g.graph_id, g.graph_exec_id) for g in ex.graph_traces} == {
        (0, 13, 1, 2)
    }
    assert all(g.api is not None and g.api.name.startswith("cudaGraphLaunch") for g in ex.graph_traces)
    assert len(ex.kernels) == 250 and not any(k.graph_node_id is not None for k in ex.kernels)
    assert not {(k.pid, k.correlation_id) for k in ex.kernels} & {
        (g.pid, g.correlation_id) for g in ex.graph_traces
    }


def test_reference_node_mode_kernels(case: Callable[[str], Case]) -> None:
    """Node mode: no GRAPH_TRACE rows; 100 graph kernels, five per cudaGraphLaunch, sharing its correlation
    id."""
    ref = case(NODE).ref
    ex = ref.export
    assert not ex.graph_traces
    in_graphs = [k for k in ex.kernels if k.graph_node_id is not None]
    assert len(ex.kernels) == 350 and len(in_graphs) == 100
    assert all(k.api is not None and k.api.name.startswith("cudaGraphLaunch") for k in in_graphs)
    assert Counter(Counter((k.pid, k.correlation_id) for k in in_graphs).values()) == {5: 20}
    assert {(r["graph_id"], r["graph_exec_id"], r["kernel_count"]) for r in ref.graph_launches} == {(1, 2, 5)}


# ----------------------------------------------------------------------------------------------------
# nsys stats 2022.4: it knows nothing of GRAPH_TRACE (no report script reads it), so it is an oracle for the
# kernels of every mode and for node mode's projection, where a graph launch is one call with 5 kernels.


@pytest.mark.nsys
@pytest.mark.parametrize("name", files(GRAPH, NODE, GPUMETRICS))
def test_kernel_summary_vs_nsys(case: Callable[[str], Case], name: str, nsys_cache: Path) -> None:
    """kernel_summary stays kernels only: gpukernsum's instances and totals per name, in every mode."""
    c = case(name)
    stats = run_stats(c.export, nsys_cache, ("gpukernsum", "nvtxgpuproj"))
    nsys: dict[str, list[int]] = {}
    for r in stats["gpukernsum"] or []:
        count, total = nsys.get(r["Name"], [0, 0])
        nsys[r["Name"]] = [count + r["Instances"], total + r["Total Time (ns)"]]
    ours: dict[str, list[int]] = {}
    for r in c.rows("SELECT name, count, total_ns FROM kernel_summary WHERE trace_id = ?"):
        count, total = ours.get(r["name"], [0, 0])
        ours[r["name"]] = [count + r["count"], total + r["total_ns"]]
    assert ours == nsys


@pytest.mark.nsys
def test_node_mode_projection_vs_nsys(case: Callable[[str], Case], nsys_cache: Path) -> None:
    """Node mode: nvtxgpuproj projects each ``graph`` range onto its launch's 5 kernels as one GPU op (one
    call), which is the reference's node-mode graph_launches row; traceforge agrees (today too)."""
    c = case(NODE)
    stats = run_stats(c.export, nsys_cache, ("gpukernsum", "nvtxgpuproj"))
    projected = {
        (
            n["PID"],
            n["TID"],
            n["Orig Start (ns)"],
            n["Orig Start (ns)"] + n["Orig Duration (ns)"],
            n["Name"],
        ): (
            n["Projected Start (ns)"],
            n["Projected Start (ns)"] + n["Projected Duration (ns)"],
            n["NumGPUOps"],
        )
        for n in stats["nvtxgpuproj"] or []
    }
    got, expected = _projection(c)
    assert set(projected) <= set(got)
    for key, (start, end, calls) in projected.items():
        assert (got[key]["gpu_start_ns"], got[key]["gpu_end_ns"], got[key]["launch_count"]) == (
            start,
            end,
            calls,
        )
    graph_ranges = sorted((k for k in projected if k[4] == "graph"), key=lambda k: k[2])
    assert len(graph_ranges) == 20
    launches = sorted(c.ref.graph_launches, key=lambda r: r["start_ns"])
    assert [projected[k][:2] for k in graph_ranges] == [(r["start_ns"], r["end_ns"]) for r in launches]
    assert all(expected[k]["gpu_op_count"] == 5 for k in graph_ranges)


# ----------------------------------------------------------------------------------------------------
# Edge cases: the graph-mode capture with GRAPH_TRACE rows added (the real captures never overlap a graph
# execution with a kernel), and the node-mode graph launch of tests/export_builder.py's ``nvtx`` case.

#: Rows added to a copy of the graph-mode capture:
#: (start, end, streamId, correlationId, graphId, graphExecId).
EXTRA_GRAPH_ROWS = [
    # Overlaps the first iterations' kernels on a stream of its own (up to a moment when 5 kernels run) and
    # bridges the two gaps after the first (3.4 and 12.5 us): a 6th concurrent activity, a stream with graph
    # work and no kernel, and no API call with its correlation id.
    (495_300_000, 495_530_000, 99, 100_000, 7, 8),
    # Zero length inside the next gap: counted (graph_launch_count, first/last), never active, splits nothing.
    (495_700_000, 495_700_000, 13, None, 7, 8),
]
EDGE_GRAPH = "graph_edge"
EDGE_NODE = "nvtx"


@pytest.fixture(scope="module")
def edge_case(
    case: Callable[[str], Case],
    edge_export: Callable[[str], Path],
    ingested: Callable[[Path], tuple[Path, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], Case]:
    made: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in made:
            if name == EDGE_GRAPH:
                export = tmp_path_factory.mktemp("graph_edge") / "graph_edge.sqlite"
                export.write_bytes(case(GRAPH).export.read_bytes())
                con = sqlite3.connect(export)
                pid_global = con.execute(
                    "SELECT globalPid FROM CUPTI_ACTIVITY_KIND_GRAPH_TRACE LIMIT 1"
                ).fetchone()[0]
                con.executemany(
                    "INSERT INTO CUPTI_ACTIVITY_KIND_GRAPH_TRACE (start, end, deviceId, contextId,"
                    " greenContextId, streamId, correlationId, globalPid, graphId, graphExecId)"
                    " VALUES (?, ?, 0, 1, 0, ?, ?, ?, ?, ?)",
                    [(s, e, stream, corr, pid_global, g, x) for s, e, stream, corr, g, x in EXTRA_GRAPH_ROWS],
                )
                con.commit()
                con.close()
            else:
                export = edge_export(name)
            db, trace_id = ingested(export)
            made[name] = Case(name, export, db, trace_id, reference.compute(str(export)))
        return made[name]

    return get


def test_reference_graph_edge_export(edge_case: Callable[[str], Case]) -> None:
    """What the added rows do to the reference: a 6th concurrent activity, two gaps fewer, a graph-only
    stream."""
    ref = edge_case(EDGE_GRAPH).ref
    m = ref.device_metrics[0]
    assert (m["graph_launch_count"], m["graph_ns"]) == (22, 1_120_638 + 230_000)
    assert m["max_concurrency"] == 6 and m["gap_count"] == 70 - 2 and m["stream_count"] == 6
    s = ref.stream_metrics[(0, 99)]
    assert (s["kernel_count"], s["graph_launch_count"], s["busy_ns"], s["launch_matched"]) == (
        0,
        1,
        230_000,
        0,
    )
    assert m["launch_matched"] == 270
    assert len(ref.graph_launches) == 22 and ref.graph_summary[(0, 7)]["count"] == 2
    nodes = edge_case(EDGE_NODE).ref
    # export_builder copies llama's META_DATA_CAPTURE, which says MODE=Graph: the recorded setting wins over
    # what the rows suggest (issue 21: "from META_DATA_CAPTURE ..., else inferred").
    assert nodes.cuda_graph_trace == "graph"
    assert [(r["kernel_count"], r["graph_id"], r["graph_exec_id"]) for r in nodes.graph_launches] == [
        (5, 0, 0)
    ]


@pytest.mark.parametrize("name", [EDGE_GRAPH, EDGE_NODE])
def test_edge_metrics(edge_case: Callable[[str], Case], name: str) -> None:
    c = edge_case(name)
    _compare_metrics(c, "device_metrics", EXISTING_COLUMNS)
    _compare_metrics(c, "stream_metrics", EXISTING_COLUMNS)


@pytest.mark.parametrize("name", [EDGE_GRAPH, EDGE_NODE])
def test_edge_graph_tables(edge_case: Callable[[str], Case], name: str) -> None:
    c = edge_case(name)
    _compare_metrics(c, "device_metrics", GRAPH_COLUMNS)
    _compare_metrics(c, "stream_metrics", GRAPH_COLUMNS)
    got = c.rows(
        "SELECT * FROM graph_launches WHERE trace_id = ? ORDER BY device_id, start_ns, stream_id, pid"
    )
    assert [{k: r[k] for k in GRAPH_LAUNCH_COLUMNS} for r in got] == [
        {k: r[k] for k in GRAPH_LAUNCH_COLUMNS} for r in c.ref.graph_launches
    ]
    summary = {
        (r["device_id"], r["graph_id"]): r for r in c.rows("SELECT * FROM graph_summary WHERE trace_id = ?")
    }
    assert set(summary) == set(c.ref.graph_summary)
    for key, e in c.ref.graph_summary.items():
        assert all(same(summary[key][col], e[col]) for col in GRAPH_SUMMARY_COLUMNS), (key, summary[key], e)
    (trace,) = c.rows("SELECT cuda_graph_trace FROM traces WHERE trace_id = ?")
    assert trace["cuda_graph_trace"] == c.ref.cuda_graph_trace


@pytest.mark.parametrize("name", [EDGE_GRAPH, EDGE_NODE])
def test_edge_levels_and_gaps(edge_case: Callable[[str], Case], name: str) -> None:
    c = edge_case(name)
    levels: dict[int, dict[int, int]] = {}
    for r in c.rows("SELECT device_id, level, time_ns FROM concurrency_levels WHERE trace_id = ?"):
        if r["time_ns"]:
            levels.setdefault(r["device_id"], {})[r["level"]] = r["time_ns"]
    assert levels == {d: lv for d, lv in c.ref.concurrency_levels.items() if lv}
    gaps: dict[int, list[tuple[int, int]]] = {}
    for r in c.rows("SELECT device_id, start_ns, end_ns FROM gaps WHERE trace_id = ?"):
        gaps.setdefault(r["device_id"], []).append((r["start_ns"], r["end_ns"]))
    assert {d: sorted(g) for d, g in gaps.items()} == {d: sorted(g) for d, g in c.ref.gaps.items() if g}


# ----------------------------------------------------------------------------------------------------
# Re-analysis: the stored graph executions stand in for the export


@pytest.mark.parametrize("name", [*files(GRAPH, NODE), EDGE_GRAPH])
def test_reanalysis_reproduces_every_derived_table(
    case: Callable[[str], Case], edge_case: Callable[[str], Case], name: str, tmp_path: Path
) -> None:
    """``reanalyze`` (no export file) recomputes every derived table exactly as ingest computed it, graph
    executions included (read back from graph_launches)."""
    from traceforge.ingest.reanalyze import reanalyze
    from traceforge.store import Store
    from traceforge.store.schema import DERIVED_TABLES

    c = edge_case(name) if name == EDGE_GRAPH else case(name)
    db = tmp_path / "reanalyzed.duckdb"
    db.write_bytes(c.db.read_bytes())

    def derived(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        for table in DERIVED_TABLES:
            cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] != "metric_version"]
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE trace_id = ?", [c.trace_id])
            out[table] = sorted(rows.fetchall(), key=repr)
        return out

    with Store(db) as store:
        before = derived(store.con)
        outcomes = reanalyze(store, [c.trace_id])
        assert [o.status for o in outcomes] == ["recomputed"], outcomes
        after = derived(store.con)
    assert before["graph_summary"] == after["graph_summary"]
    for table in DERIVED_TABLES:
        assert after[table] == before[table], table
