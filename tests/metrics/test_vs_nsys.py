"""traceforge (and the test reference) against Nsight Systems' own ``nsys stats`` (Debian's 2022.4).

For each export, ``nsys stats --report gpukernsum,gpumemtimesum,gpumemsizesum,nvtxgpuproj,kernexecsum,
kernexectrace`` is run once (tests/nsys_oracle.py) and compared with

* the plain-Python reference (validates the reference itself against nsys), and
* traceforge's ``kernel_summary``, ``memop_summary``, ``nvtx_projection``, per-kernel launch latency and the
  device launch-latency percentiles.

Where nsys defines a number differently from traceforge the comparison adapts, and says how:

* gpukernsum groups by (name, grid, block) over all devices: counts and totals are summed, min/max folded;
  avg/median/stddev (nsys rounds them to 0.1 ns) are compared only for names with one (grid, block) group on
  one device.
* gpumemtimesum/gpumemsizesum group by operation over all devices; sizes are in MB (10^6 B) rounded to 0.001.
* nvtxgpuproj's NumGPUOps counts launching API calls (``count(DISTINCT correlationId)``): it is
  ``launch_count``, not ``gpu_op_count``. It lists only ranges with GPU work, needs the whole API call inside
  the closed range (traceforge: the call's start in ``[start, end)``; no call in our exports straddles a range
  end), and its Lvl counts start/end ranges as parents, so ``level`` is not compared.
* kernexecsum's API names lose their ``_vNNNN`` suffix; its "queue" time starts at the API call's end, so the
  mean launch latency (kernel start - API start) equals AAvg + QAvg only for groups where every kernel
  started after its call returned (QCount == Count). Its API, queue and kernel times are traceforge's
  ``kernels.api_ns``, ``queue_ns`` (NULL where nsys counts none) and ``duration_ns``, compared per group.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

import reference
from nsys_oracle import MEMOP_NAMES, run_stats, strip_api_version

# Marked ``nsys``: conftest fails these tests with what to install when nsys 2022.4 is missing.
pytestmark = [pytest.mark.nsys]

REPORTS = ("gpukernsum", "gpumemtimesum", "gpumemsizesum", "nvtxgpuproj", "kernexecsum", "kernexectrace")
#: The llama capture is the long case (nsys stats over 183,594 kernels): marked slow.
SOURCES = [
    "small_matmul",
    pytest.param("llama", marks=pytest.mark.slow),
    "nvtx",
    "two_processes",
    "two_devices",
    "unsorted",
    "many_streams",
]


@pytest.fixture(scope="module", params=SOURCES)
def source(request: pytest.FixtureRequest, edge_export: Any, nsys_cache: Path) -> dict[str, Any]:
    name = request.param
    if name == "small_matmul":
        export = request.getfixturevalue("small_matmul_export")
    elif name == "llama":
        export = request.getfixturevalue("llama_export")
    else:
        export = edge_export(name)
    stats = run_stats(export, nsys_cache, REPORTS)
    return {"name": name, "export": export, "stats": stats, "ref": reference.compute(str(export))}


def _tf_rows(request: pytest.FixtureRequest, export: Path, query: str) -> list[dict[str, Any]]:
    db, trace_id = request.getfixturevalue("ingested")(export)
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(query, [trace_id] * query.count("?"))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def _close(a: Any, b: Any, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=tol)


def _fail(source: dict[str, Any], what: str, problems: list[str]) -> None:
    if problems:
        pytest.fail(
            f"[{source['name']}] {what}: {len(problems)} disagreement(s) with nsys stats 2022.4:\n"
            + "\n".join(problems[:40]),
            pytrace=False,
        )


# ----------------------------------------------------------------------------------------------------
# gpukernsum


def _nsys_kernels(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in stats["gpukernsum"] or []:
        groups[row["Name"]].append(row)
    out = {}
    for name, rows in groups.items():
        out[name] = {
            "count": sum(r["Instances"] for r in rows),
            "total_ns": sum(r["Total Time (ns)"] for r in rows),
            "min_ns": min(r["Min (ns)"] for r in rows),
            "max_ns": max(r["Max (ns)"] for r in rows),
            "single": rows[0] if len(rows) == 1 else None,
        }
    return out


def _compare_kernel_summary(source: dict[str, Any], ours: list[dict[str, Any]], who: str) -> list[str]:
    nsys = _nsys_kernels(source["stats"])
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ours:
        by_name[r["name"]].append(r)
    problems = []
    if set(nsys) != set(by_name):
        problems.append(
            f"names only in {who}: {sorted(set(by_name) - set(nsys))[:3]}; "
            f"only in nsys: {sorted(set(nsys) - set(by_name))[:3]}"
        )
    for name, n in nsys.items():
        rows = by_name.get(name)
        if not rows:
            continue
        mine = {
            "count": sum(r["count"] for r in rows),
            "total_ns": sum(r["total_ns"] for r in rows),
            "min_ns": min(r["min_ns"] for r in rows),
            "max_ns": max(r["max_ns"] for r in rows),
        }
        for col in mine:
            if mine[col] != n[col]:
                problems.append(f"{name[:60]!r}.{col}: {who}={mine[col]} nsys={n[col]}")
        single = n["single"]
        if single is not None and len(rows) == 1:
            for col, nsys_col in (
                ("avg_ns", "Avg (ns)"),
                ("median_ns", "Med (ns)"),
                ("stddev_ns", "StdDev (ns)"),
            ):
                value = rows[0][col]
                if col == "stddev_ns" and value is None and rows[0]["count"] == 1:
                    value = 0.0
                if not _close(value, single[nsys_col], 0.051):
                    problems.append(f"{name[:60]!r}.{col}: {who}={value} nsys={single[nsys_col]}")
    return problems


def test_reference_kernel_summary_vs_nsys(source: dict[str, Any]) -> None:
    ours = [{"name": name, **v} for (_dev, name), v in source["ref"].kernel_summary.items()]
    _fail(source, "reference gpukernsum", _compare_kernel_summary(source, ours, "reference"))


def test_kernel_summary_vs_nsys(source: dict[str, Any], request: pytest.FixtureRequest) -> None:
    ours = _tf_rows(request, source["export"], "SELECT * FROM kernel_summary WHERE trace_id = ?")
    _fail(source, "kernel_summary vs gpukernsum", _compare_kernel_summary(source, ours, "traceforge"))


# ----------------------------------------------------------------------------------------------------
# gpumemtimesum / gpumemsizesum


def _compare_memops(source: dict[str, Any], ours: list[dict[str, Any]], who: str) -> list[str]:
    mine: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ours:
        key = (r["op"], r["copy_kind"])
        m = mine.setdefault(
            key, {"count": 0, "total_ns": 0, "total_bytes": 0, "min_ns": None, "max_ns": None}
        )
        m["count"] += r["count"]
        m["total_ns"] += r["total_ns"]
        m["total_bytes"] += r["total_bytes"]
        m["min_ns"] = r["min_ns"] if m["min_ns"] is None else min(m["min_ns"], r["min_ns"])
        m["max_ns"] = r["max_ns"] if m["max_ns"] is None else max(m["max_ns"], r["max_ns"])
    problems = []
    time_rows = {MEMOP_NAMES[r["Operation"]]: r for r in source["stats"]["gpumemtimesum"] or []}
    size_rows = {MEMOP_NAMES[r["Operation"]]: r for r in source["stats"]["gpumemsizesum"] or []}
    if set(time_rows) != set(mine):
        problems.append(f"operations {who}={sorted(mine)} nsys={sorted(time_rows)}")
    for key, t in time_rows.items():
        if key not in mine:
            continue
        for col, nsys_col in (("count", "Count"), ("total_ns", "Total Time (ns)"), ("min_ns", "Min (ns)"),
                              ("max_ns", "Max (ns)")):  # fmt: skip
            if mine[key][col] != t[nsys_col]:
                problems.append(f"{key}.{col}: {who}={mine[key][col]} nsys={t[nsys_col]}")
        s = size_rows.get(key)
        if s is not None and not _close(mine[key]["total_bytes"] / 1e6, s["Total (MB)"], 0.00051):
            problems.append(f"{key}.total_bytes: {who}={mine[key]['total_bytes']} nsys={s['Total (MB)']} MB")
    return problems


def test_reference_memops_vs_nsys(source: dict[str, Any]) -> None:
    ours = [{"op": op, "copy_kind": kind, **v} for (_d, op, kind), v in source["ref"].memop_summary.items()]
    _fail(source, "reference gpumemtimesum", _compare_memops(source, ours, "reference"))


def test_memop_summary_vs_nsys(source: dict[str, Any], request: pytest.FixtureRequest) -> None:
    ours = _tf_rows(request, source["export"], "SELECT * FROM memop_summary WHERE trace_id = ?")
    _fail(source, "memop_summary vs gpumemtimesum/gpumemsizesum", _compare_memops(source, ours, "traceforge"))


def test_device_memcpy_totals_vs_nsys(source: dict[str, Any], request: pytest.FixtureRequest) -> None:
    rows = _tf_rows(request, source["export"], "SELECT * FROM device_metrics WHERE trace_id = ?")
    problems = []
    nsys_rows = source["stats"]["gpumemtimesum"] or []
    for op, count_col, ns_col in (
        ("memcpy", "memcpy_count", "memcpy_ns"),
        ("memset", "memset_count", "memset_ns"),
    ):
        nsys_count = sum(r["Count"] for r in nsys_rows if MEMOP_NAMES[r["Operation"]][0] == op)
        nsys_ns = sum(r["Total Time (ns)"] for r in nsys_rows if MEMOP_NAMES[r["Operation"]][0] == op)
        ours_count = sum(r[count_col] or 0 for r in rows)
        ours_ns = sum(r[ns_col] or 0 for r in rows)
        if (ours_count, ours_ns) != (nsys_count, nsys_ns):
            problems.append(f"{op}: traceforge count/ns={ours_count}/{ours_ns} nsys={nsys_count}/{nsys_ns}")
    _fail(source, "device_metrics memcpy/memset totals", problems)


# ----------------------------------------------------------------------------------------------------
# nvtxgpuproj


def _compare_nvtx(source: dict[str, Any], ours: list[dict[str, Any]], who: str) -> list[str]:
    by_key = {(r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r for r in ours}
    problems = []
    seen = set()
    for n in source["stats"]["nvtxgpuproj"] or []:
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
            "launch_count": n["NumGPUOps"],
        }
        for col, value in expected.items():
            if r[col] != value:
                problems.append(f"{key}.{col}: {who}={r[col]} nsys={value}")
    for key, r in by_key.items():
        if key not in seen and r["launch_count"]:
            problems.append(
                f"range {key} launched {r['launch_count']} calls in {who} but nsys projects nothing"
            )
    return problems


def test_reference_nvtx_vs_nsys(source: dict[str, Any]) -> None:
    _fail(source, "reference nvtxgpuproj", _compare_nvtx(source, source["ref"].nvtx_projection, "reference"))


def test_nvtx_projection_vs_nsys(source: dict[str, Any], request: pytest.FixtureRequest) -> None:
    ours = _tf_rows(request, source["export"], "SELECT * FROM nvtx_projection WHERE trace_id = ?")
    _fail(source, "nvtx_projection vs nvtxgpuproj", _compare_nvtx(source, ours, "traceforge"))


# ----------------------------------------------------------------------------------------------------
# kernexectrace / kernexecsum: launch latency


def _nsys_launches(source: dict[str, Any]) -> list[tuple[int, int, int, int, int]]:
    """(pid, tid, device, kernel start, API start) of every kernel nsys matched to its call."""
    return sorted(
        (r["PID"], r["TID"], r["DevId"], r["Kernel Start (ns)"], r["API Start (ns)"])
        for r in source["stats"]["kernexectrace"] or []
    )


def test_reference_launches_vs_nsys(source: dict[str, Any]) -> None:
    ours = sorted(
        (k.pid, k.api.tid, k.device_id, k.start, k.api.start) for k in source["ref"].export.kernels if k.api
    )
    nsys = _nsys_launches(source)
    assert ours == nsys, f"[{source['name']}] reference vs kernexectrace: {len(ours)} vs {len(nsys)} launches"


def test_launch_latency_vs_nsys(source: dict[str, Any], request: pytest.FixtureRequest) -> None:
    kernels = _tf_rows(
        request,
        source["export"],
        "SELECT pid, launch_tid, device_id, start_ns, api_start_ns, launch_latency_ns, launch_api, name "
        "FROM kernels WHERE trace_id = ?",
    )
    problems = []
    ours = sorted(
        (k["pid"], k["launch_tid"], k["device_id"], k["start_ns"], k["api_start_ns"])
        for k in kernels
        if k["api_start_ns"] is not None
    )
    nsys = _nsys_launches(source)
    if ours != nsys:
        diff = sorted(set(ours) ^ set(nsys))[:3]
        problems.append(f"matched launches: traceforge {len(ours)} vs kernexectrace {len(nsys)}; e.g. {diff}")
    bad = [
        k
        for k in kernels
        if k["api_start_ns"] is not None and k["launch_latency_ns"] != k["start_ns"] - k["api_start_ns"]
    ]  # noqa: E501
    if bad:
        problems.append(
            f"{len(bad)} kernels with launch_latency_ns != start_ns - api_start_ns, e.g. {bad[0]}"
        )

    # Device percentiles from nsys' own per-kernel rows (numpy's linear definition, as docs/schema.md says).
    per_device: dict[int, list[int]] = defaultdict(list)
    for _pid, _tid, dev, k_start, api_start in nsys:
        per_device[dev].append(k_start - api_start)
    metrics = {
        r["device_id"]: r
        for r in _tf_rows(request, source["export"], "SELECT * FROM device_metrics WHERE trace_id = ?")
    }
    for dev, lat in per_device.items():
        m = metrics.get(dev)
        if m is None:
            problems.append(f"device {dev} missing from device_metrics")
            continue
        if m["launch_matched"] != len(lat):
            problems.append(f"device {dev} launch_matched: traceforge={m['launch_matched']} nsys={len(lat)}")
        for q in (50, 90, 99):
            expected = float(np.percentile(lat, q))
            if not _close(m[f"launch_latency_p{q}_ns"], expected, 1e-6 * max(1.0, abs(expected))):
                got = m[f"launch_latency_p{q}_ns"]
                problems.append(f"device {dev} launch_latency_p{q}_ns: traceforge={got} "
                                f"nsys-derived={expected}")  # fmt: skip

    # kernexecsum: kernels per (pid, tid, device, API, kernel name), and the mean latency where defined.
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
    for r in source["stats"]["kernexecsum"] or []:
        key = (r["PID"], r["TID"], r["DevId"], r["API Name"], r["Kernel Name"])
        lat = groups.get(key)
        if lat is None or len(lat) != r["Count"]:
            problems.append(
                f"kernexecsum {key[3]}/{key[4][:40]!r}: traceforge {len(lat or [])} kernels, "
                f"nsys {r['Count']}"
            )  # noqa: E501
            continue
        if r["QCount"] == r["Count"]:
            mean = sum(lat) / len(lat)
            if not _close(mean, r["AAvg (ns)"] + r["QAvg (ns)"], 0.11):
                problems.append(f"kernexecsum {key[4][:40]!r}: mean latency {mean} vs AAvg+QAvg "
                                f"{r['AAvg (ns)'] + r['QAvg (ns)']}")  # fmt: skip
    _fail(source, "launch latency vs kernexectrace/kernexecsum", problems)


def test_launch_split_vs_kernexecsum(source: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """``kernels.api_ns``/``queue_ns``/``duration_ns`` grouped as kernexecsum groups: its Count, QCount and
    API, queue and kernel time statistics (nsys rounds averages and medians to 0.1 ns)."""
    kernels = _tf_rows(
        request,
        source["export"],
        "SELECT pid, launch_tid, device_id, launch_api, name, api_ns, queue_ns, duration_ns "
        "FROM kernels WHERE trace_id = ? AND api_ns IS NOT NULL",
    )
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for k in kernels:
        key = (k["pid"], k["launch_tid"], k["device_id"], strip_api_version(k["launch_api"] or ""), k["name"])
        groups[key].append(k)
    problems = []
    nsys_rows = source["stats"]["kernexecsum"] or []
    assert nsys_rows, f"[{source['name']}] kernexecsum gave no rows"
    for r in nsys_rows:
        key = (r["PID"], r["TID"], r["DevId"], r["API Name"], r["Kernel Name"])
        ks = groups.pop(key, [])
        api = [k["api_ns"] for k in ks]
        queue = [k["queue_ns"] for k in ks if k["queue_ns"] is not None]
        kern = [k["duration_ns"] for k in ks]
        if (len(ks), len(queue)) != (r["Count"], r["QCount"]):
            problems.append(
                f"{key[4][:40]!r}: Count/QCount {len(ks)}/{len(queue)} vs {r['Count']}/{r['QCount']}"
            )
            continue
        for prefix, values in (("A", api), ("Q", queue), ("K", kern)):
            if not values:
                continue
            for stat, ours in (
                ("Avg", sum(values) / len(values)),
                ("Med", float(np.median(values))),
                ("Min", min(values)),
                ("Max", max(values)),
            ):
                theirs = r[f"{prefix}{stat} (ns)"]
                if not _close(ours, theirs, 0.051 if stat in ("Avg", "Med") else 0):
                    problems.append(f"{key[4][:40]!r}: {prefix}{stat} traceforge={ours} nsys={theirs}")
    # Every launch traceforge matched is in one of nsys's groups (test_launch_latency_vs_nsys: the same set).
    if groups:
        problems.append(
            f"{sum(map(len, groups.values()))} launches in groups kernexecsum lacks: {list(groups)[:2]}"
        )
    _fail(source, "launch split vs kernexecsum", problems)
