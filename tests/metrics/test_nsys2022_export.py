"""A real GPU export written by nsys 2022.4 (issue 21, part 6): ingested, and compared with the reference
and with ``nsys stats`` 2022.4.

``cu11_driverapi_h200_nsys2022.4.sqlite`` (H200, CUDA 11 program, kernels launched with the driver API
``cuLaunchKernel``): export schema 3.0.0, ``EXPORT_META_DATA`` instead of ``META_DATA_EXPORT``, no
``META_DATA_CAPTURE``, no ``greenContextId`` column, no graph tables; 90 kernels on 3 streams (30 ``iter``
NVTX ranges of 2 concurrent ``spin`` kernels + 1 ``saxpy``), 2 memcpy, 1 memset, 130 CUDA API rows. The
2025.3 exports get the same comparisons in test_metrics_reference.py and test_vs_nsys.py; the definitions
where nsys differs from traceforge are listed in tests/nsys_oracle.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import duckdb
import numpy as np
import pytest

import reference
from nsys_oracle import MEMOP_NAMES, run_stats, strip_api_version

NAME = "cu11_driverapi_h200_nsys2022.4.sqlite"
REPORTS = ("gpukernsum", "gpumemtimesum", "gpumemsizesum", "nvtxgpuproj", "kernexecsum", "kernexectrace")

METRIC_COLUMNS = reference.METRIC_COLUMNS


@dataclass
class Export2022:
    export: Path
    db: Path
    trace_id: str
    ref: reference.Reference

    def rows(self, query: str) -> list[dict[str, Any]]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            cur = con.execute(query, [self.trace_id] * query.count("?"))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()


@pytest.fixture(scope="module")
def cu11(real_export: Callable[[str], Path], ingested: Callable[[Path], tuple[Path, str]]) -> Export2022:
    """The 2022.4 export, ingested through the Python API (an ingest failure fails every test here)."""
    export = real_export(NAME)
    db, trace_id = ingested(export)
    return Export2022(export, db, trace_id, reference.compute(str(export)))


@pytest.fixture(scope="module")
def stats(cu11: Export2022, nsys_cache: Path) -> dict[str, Any]:
    """``nsys stats`` 2022.4 on the export (the nsys that wrote it)."""
    return run_stats(cu11.export, nsys_cache, REPORTS)


def same(actual: Any, expected: Any) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(expected, float) or isinstance(actual, float):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-6)
    return bool(actual == expected)


def _close(a: Any, b: Any, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=tol)


def _report(what: str, problems: list[str]) -> None:
    if problems:
        pytest.fail(
            f"[{NAME}] {what}: {len(problems)} disagreement(s):\n" + "\n".join(problems[:40]), pytrace=False
        )


# ----------------------------------------------------------------------------------------------------
# What the export is, and that it landed


def test_trace_row(cu11: Export2022) -> None:
    (t,) = cu11.rows("SELECT * FROM traces WHERE trace_id = ?")
    ex = cu11.ref.export
    problems = []
    expected = {
        "nsys_version": "2022.4.2.1",
        "schema_version": "3.0.0",
        "gpu_count": 1,
        "kernel_count": len(ex.kernels),
        "memop_count": len(ex.memops),
        "api_call_count": len(ex.api_calls),
    }
    for col, value in expected.items():
        if t[col] != value:
            problems.append(f"traces.{col}: traceforge={t[col]!r} expected={value!r}")
    if (len(ex.kernels), len(ex.memops), len(ex.api_calls)) != (90, 3, 130):
        problems.append(f"the export changed: {len(ex.kernels)} kernels, {len(ex.memops)} memops")
    _report("traces", problems)


def test_driver_api_launches(cu11: Export2022) -> None:
    """Every kernel is matched to its ``cuLaunchKernel`` (a driver call, in the RUNTIME table) on (pid,
    correlationId)."""
    got = sorted(
        (r["device_id"], r["pid"], r["correlation_id"], r["start_ns"], r["end_ns"], r["launch_tid"],
         r["api_start_ns"], r["launch_latency_ns"], r["launch_api"])
        for r in cu11.rows("SELECT * FROM kernels WHERE trace_id = ?")
    )  # fmt: skip
    expected = sorted(
        (k.device_id, k.pid, k.correlation_id, k.start, k.end, k.api.tid if k.api else None,
         k.api.start if k.api else None, k.start - k.api.start if k.api else None,
         k.api.name if k.api else None)
        for k in cu11.ref.export.kernels
    )  # fmt: skip
    assert {e[-1] for e in expected} == {"cuLaunchKernel"}
    diff = [(g, e) for g, e in zip(got, expected) if g != e]
    assert len(got) == len(expected) and not diff, f"{len(got)} vs {len(expected)} kernels; first: {diff[:1]}"


# ----------------------------------------------------------------------------------------------------
# vs the reference implementation


def test_device_and_stream_metrics(cu11: Export2022) -> None:
    problems = []
    for table, key_cols, expected_rows in (
        ("device_metrics", ["device_id"], {(d,): m for d, m in cu11.ref.device_metrics.items()}),
        ("stream_metrics", ["device_id", "stream_id"], dict(cu11.ref.stream_metrics)),
    ):
        got = {
            tuple(r[k] for k in key_cols): r for r in cu11.rows(f"SELECT * FROM {table} WHERE trace_id = ?")
        }
        if set(got) != set(expected_rows):
            problems.append(f"{table} keys: traceforge={sorted(got)} reference={sorted(expected_rows)}")
        for key, e in expected_rows.items():
            for col in METRIC_COLUMNS:
                if key in got and not same(got[key][col], e[col]):
                    problems.append(f"{table}{key}.{col}: traceforge={got[key][col]!r} reference={e[col]!r}")
    _report("device/stream metrics vs reference", problems)


def test_concurrency_levels_and_gaps(cu11: Export2022) -> None:
    levels: dict[int, dict[int, int]] = defaultdict(dict)
    for r in cu11.rows("SELECT device_id, level, time_ns FROM concurrency_levels WHERE trace_id = ?"):
        if r["time_ns"]:
            levels[r["device_id"]][r["level"]] = r["time_ns"]
    assert dict(levels) == {d: lv for d, lv in cu11.ref.concurrency_levels.items() if lv}
    gaps: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in cu11.rows("SELECT device_id, start_ns, end_ns FROM gaps WHERE trace_id = ?"):
        gaps[r["device_id"]].append((r["start_ns"], r["end_ns"]))
    assert {d: sorted(g) for d, g in gaps.items()} == {d: sorted(g) for d, g in cu11.ref.gaps.items() if g}


def test_kernel_summary(cu11: Export2022) -> None:
    got = {
        (r["device_id"], r["name"]): r for r in cu11.rows("SELECT * FROM kernel_summary WHERE trace_id = ?")
    }
    problems = []
    if set(got) != set(cu11.ref.kernel_summary):
        problems.append(f"keys: traceforge={sorted(got)} reference={sorted(cu11.ref.kernel_summary)}")
    for key, e in cu11.ref.kernel_summary.items():
        for col, value in e.items():
            if key in got and not same(got[key][col], value):
                problems.append(f"{key}.{col}: traceforge={got[key][col]!r} reference={value!r}")
    _report("kernel_summary vs reference", problems)


def test_memop_summary(cu11: Export2022) -> None:
    got = {
        (r["device_id"], r["op"], r["copy_kind"]): r
        for r in cu11.rows("SELECT * FROM memop_summary WHERE trace_id = ?")
    }
    problems = []
    if set(got) != set(cu11.ref.memop_summary):
        problems.append(f"keys: traceforge={sorted(got)} reference={sorted(cu11.ref.memop_summary)}")
    for key, e in cu11.ref.memop_summary.items():
        for col, value in e.items():
            if key in got and not same(got[key][col], value):
                problems.append(f"{key}.{col}: traceforge={got[key][col]!r} reference={value!r}")
    _report("memop_summary vs reference", problems)


def test_nvtx_projection(cu11: Export2022) -> None:
    got = {
        (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r
        for r in cu11.rows("SELECT * FROM nvtx_projection WHERE trace_id = ?")
    }
    expected = {
        (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r for r in cu11.ref.nvtx_projection
    }
    problems = []
    if set(got) != set(expected):
        problems.append(f"ranges differ: {sorted(set(got) ^ set(expected))[:4]}")
    cols = ["domain", "level", "gpu_start_ns", "gpu_end_ns", "gpu_op_count", "launch_count", "kernel_count",
            "kernel_time_ns"]  # fmt: skip
    for key, e in expected.items():
        for col in cols:
            if key in got and not same(got[key][col], e[col]):
                problems.append(f"{key}.{col}: traceforge={got[key][col]!r} reference={e[col]!r}")
    if len(expected) != 31:
        problems.append(f"{len(expected)} ranges in the export, expected 31 (1 setup + 30 iter)")
    _report("nvtx_projection vs reference", problems)


def test_no_graph_columns(cu11: Export2022) -> None:
    """A 2022.4 export without graphs: cuda_graph_trace NULL (no META_DATA_CAPTURE either), no graph work."""
    assert cu11.ref.cuda_graph_trace is None
    (t,) = cu11.rows("SELECT cuda_graph_trace FROM traces WHERE trace_id = ?")
    assert t["cuda_graph_trace"] is None
    for r in cu11.rows("SELECT graph_launch_count, graph_ns FROM device_metrics WHERE trace_id = ?"):
        assert (r["graph_launch_count"], r["graph_ns"]) == (0, 0)
    assert cu11.rows("SELECT * FROM graph_launches WHERE trace_id = ?") == []


# ----------------------------------------------------------------------------------------------------
# vs nsys stats 2022.4 (adapted where nsys defines a number differently: tests/nsys_oracle.py)


def _kernel_summary_vs_nsys(stats: dict[str, Any], ours: list[dict[str, Any]], who: str) -> list[str]:
    nsys: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in stats["gpukernsum"] or []:
        nsys[row["Name"]].append(row)
    mine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ours:
        mine[r["name"]].append(r)
    problems = []
    if set(nsys) != set(mine):
        problems.append(f"names: {who}={sorted(mine)} nsys={sorted(nsys)}")
    for name, rows in nsys.items():
        m = mine.get(name)
        if not m:
            continue
        pairs = [
            ("count", sum(r["count"] for r in m), sum(r["Instances"] for r in rows)),
            ("total_ns", sum(r["total_ns"] for r in m), sum(r["Total Time (ns)"] for r in rows)),
            ("min_ns", min(r["min_ns"] for r in m), min(r["Min (ns)"] for r in rows)),
            ("max_ns", max(r["max_ns"] for r in m), max(r["Max (ns)"] for r in rows)),
        ]
        if len(rows) == 1 and len(m) == 1:
            for col, n in (("avg_ns", "Avg (ns)"), ("median_ns", "Med (ns)"), ("stddev_ns", "StdDev (ns)")):
                pairs.append((col, m[0][col], rows[0][n]))
        for col, a, b in pairs:
            if not _close(a, b, 0.051):  # nsys rounds averages, medians and stddevs to 0.1 ns
                problems.append(f"{name!r}.{col}: {who}={a} nsys={b}")
    return problems


def _memops_vs_nsys(stats: dict[str, Any], ours: list[dict[str, Any]], who: str) -> list[str]:
    mine: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"count": 0, "total_ns": 0, "total_bytes": 0}
    )
    for r in ours:
        for col in ("count", "total_ns", "total_bytes"):
            mine[(r["op"], r["copy_kind"])][col] += r[col]
    times = {MEMOP_NAMES[r["Operation"]]: r for r in stats["gpumemtimesum"] or []}
    sizes = {MEMOP_NAMES[r["Operation"]]: r for r in stats["gpumemsizesum"] or []}
    problems = []
    if set(times) != set(mine):
        problems.append(f"operations: {who}={sorted(mine)} nsys={sorted(times)}")
    for key, t in times.items():
        if key not in mine:
            continue
        if (mine[key]["count"], mine[key]["total_ns"]) != (t["Count"], t["Total Time (ns)"]):
            problems.append(f"{key}: {who} count/ns={mine[key]['count']}/{mine[key]['total_ns']} "
                            f"nsys={t['Count']}/{t['Total Time (ns)']}")  # fmt: skip
        s = sizes.get(key)
        if s is None or not _close(mine[key]["total_bytes"] / 1e6, s["Total (MB)"], 0.00051):
            problems.append(
                f"{key}.total_bytes: {who}={mine[key]['total_bytes']} nsys={s and s['Total (MB)']} MB"
            )
    return problems


def _nvtx_vs_nsys(stats: dict[str, Any], ours: list[dict[str, Any]], who: str) -> list[str]:
    by_key = {(r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r for r in ours}
    problems = []
    seen = set()
    for n in stats["nvtxgpuproj"] or []:
        key = (
            n["PID"],
            n["TID"],
            n["Orig Start (ns)"],
            n["Orig Start (ns)"] + n["Orig Duration (ns)"],
            n["Name"],
        )
        seen.add(key)
        r = by_key.get(key)
        if r is None:
            problems.append(f"range {key} projected by nsys is missing from {who}")
            continue
        expected = {
            "gpu_start_ns": n["Projected Start (ns)"],
            "gpu_end_ns": n["Projected Start (ns)"] + n["Projected Duration (ns)"],
            "launch_count": n["NumGPUOps"],  # API calls that launched GPU work (nsys_oracle.py)
        }
        for col, value in expected.items():
            if r[col] != value:
                problems.append(f"{key}.{col}: {who}={r[col]} nsys={value}")
    for key, r in by_key.items():
        if key not in seen and r["launch_count"]:
            problems.append(f"range {key} launched {r['launch_count']} calls in {who}; nsys projects nothing")
    if not seen:
        problems.append("nsys projected no range")
    return problems


def _launches_vs_nsys(
    stats: dict[str, Any], ours: list[tuple[int, int, int, int, int]], who: str
) -> list[str]:
    nsys = sorted(
        (r["PID"], r["TID"], r["DevId"], r["Kernel Start (ns)"], r["API Start (ns)"])
        for r in stats["kernexectrace"] or []
    )
    if sorted(ours) != nsys:
        return [f"matched launches: {who} {len(ours)} vs kernexectrace {len(nsys)}; "
                f"e.g. {sorted(set(ours) ^ set(nsys))[:3]}"]  # fmt: skip
    return []


@pytest.mark.nsys
def test_reference_vs_nsys(cu11: Export2022, stats: dict[str, Any]) -> None:
    """The reference itself agrees with nsys 2022.4 on its own export."""
    ref = cu11.ref
    problems = _kernel_summary_vs_nsys(
        stats, [{"name": name, **v} for (_d, name), v in ref.kernel_summary.items()], "reference"
    )
    problems += _memops_vs_nsys(
        stats,
        [{"op": op, "copy_kind": kind, **v} for (_d, op, kind), v in ref.memop_summary.items()],
        "reference",
    )
    problems += _nvtx_vs_nsys(stats, ref.nvtx_projection, "reference")
    problems += _launches_vs_nsys(
        stats,
        [(k.pid, k.api.tid, k.device_id, k.start, k.api.start) for k in ref.export.kernels if k.api],
        "reference",
    )
    _report("reference vs nsys stats 2022.4", problems)


@pytest.mark.nsys
def test_kernel_summary_vs_nsys(cu11: Export2022, stats: dict[str, Any]) -> None:
    ours = cu11.rows("SELECT * FROM kernel_summary WHERE trace_id = ?")
    _report("kernel_summary vs gpukernsum", _kernel_summary_vs_nsys(stats, ours, "traceforge"))


@pytest.mark.nsys
def test_memop_summary_vs_nsys(cu11: Export2022, stats: dict[str, Any]) -> None:
    ours = cu11.rows("SELECT * FROM memop_summary WHERE trace_id = ?")
    _report("memop_summary vs gpumemtimesum/gpumemsizesum", _memops_vs_nsys(stats, ours, "traceforge"))


@pytest.mark.nsys
def test_nvtx_projection_vs_nsys(cu11: Export2022, stats: dict[str, Any]) -> None:
    ours = cu11.rows("SELECT * FROM nvtx_projection WHERE trace_id = ?")
    _report("nvtx_projection vs nvtxgpuproj", _nvtx_vs_nsys(stats, ours, "traceforge"))


@pytest.mark.nsys
def test_launch_latency_vs_nsys(cu11: Export2022, stats: dict[str, Any]) -> None:
    """Per-kernel launches (kernexectrace), device percentiles from nsys' own rows, kernexecsum counts and
    means."""
    kernels = cu11.rows(
        "SELECT pid, launch_tid, device_id, start_ns, api_start_ns, launch_latency_ns, launch_api, name "
        "FROM kernels WHERE trace_id = ?"
    )
    ours = [(k["pid"], k["launch_tid"], k["device_id"], k["start_ns"], k["api_start_ns"])
            for k in kernels if k["api_start_ns"] is not None]  # fmt: skip
    problems = _launches_vs_nsys(stats, ours, "traceforge")
    per_device: dict[int, list[int]] = defaultdict(list)
    for r in stats["kernexectrace"] or []:
        per_device[r["DevId"]].append(r["Kernel Start (ns)"] - r["API Start (ns)"])
    metrics = {r["device_id"]: r for r in cu11.rows("SELECT * FROM device_metrics WHERE trace_id = ?")}
    for dev, lat in per_device.items():
        m = metrics[dev]
        if m["launch_matched"] != len(lat):
            problems.append(f"device {dev} launch_matched: traceforge={m['launch_matched']} nsys={len(lat)}")
        for q in (50, 90, 99):
            expected = float(np.percentile(lat, q))
            if not _close(m[f"launch_latency_p{q}_ns"], expected, 1e-6 * max(1.0, abs(expected))):
                problems.append(
                    f"device {dev} p{q}: traceforge={m[f'launch_latency_p{q}_ns']} nsys-derived={expected}"
                )
    groups: dict[tuple, list[int]] = defaultdict(list)
    for k in kernels:
        if k["api_start_ns"] is not None:
            key = (
                k["pid"],
                k["launch_tid"],
                k["device_id"],
                strip_api_version(k["launch_api"] or ""),
                k["name"],
            )
            groups[key].append(k["launch_latency_ns"])
    rows = stats["kernexecsum"] or []
    if not rows:
        problems.append("kernexecsum is empty")
    for r in rows:
        key = (r["PID"], r["TID"], r["DevId"], r["API Name"], r["Kernel Name"])
        lat = groups.get(key, [])
        if len(lat) != r["Count"]:
            problems.append(
                f"kernexecsum {key[3]}/{key[4]!r}: traceforge {len(lat)} kernels, nsys {r['Count']}"
            )
        elif r["QCount"] == r["Count"] and not _close(
            sum(lat) / len(lat), r["AAvg (ns)"] + r["QAvg (ns)"], 0.11
        ):
            problems.append(f"kernexecsum {key[4]!r}: mean latency {sum(lat) / len(lat)} vs AAvg+QAvg "
                            f"{r['AAvg (ns)'] + r['QAvg (ns)']}")  # fmt: skip
    _report("launch latency vs kernexectrace/kernexecsum", problems)
