"""Every derived table of traceforge against the plain-Python reference (tests/reference.py).

Sources: the two real nsys 2025.3 fixtures and the edge-case exports of tests/export_builder.py, each ingested
once through the public Python API. Each test collects every disagreement before failing, so one run lists
them all (table, key, column, traceforge's value, the reference's value).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import duckdb
import numpy as np
import pytest

import reference
from export_builder import EDGE_CASES

SOURCES = ["small_matmul", pytest.param("llama", marks=pytest.mark.slow), *EDGE_CASES]

KERNEL_COLUMNS = reference.METRIC_COLUMNS

_reference_cache: dict[Path, reference.Reference] = {}


@dataclass
class Case:
    name: str
    export: Path
    db: Path
    trace_id: str
    ref: reference.Reference

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of ``query`` (``?`` is bound to this case's trace id) as dicts."""
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            cur = con.execute(query, [self.trace_id] * query.count("?"))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()


@pytest.fixture(scope="module", params=SOURCES)
def case(request: pytest.FixtureRequest, ingested: Any, edge_export: Any) -> Case:
    name = request.param
    if name == "small_matmul":
        export = request.getfixturevalue("small_matmul_export")
    elif name == "llama":
        export = request.getfixturevalue("llama_export")
    else:
        export = edge_export(name)
    if export not in _reference_cache:
        _reference_cache[export] = reference.compute(str(export))
    db, trace_id = ingested(export)
    return Case(name, export, db, trace_id, _reference_cache[export])


def same(actual: Any, expected: Any) -> bool:
    """Equal, with a relative tolerance of 1e-9 for floats (sums of ns are exact integers)."""
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(actual, float) and math.isnan(actual):
            return False
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-6)
    return actual == expected


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


def test_device_metrics(case: Case) -> None:
    got = {r["device_id"]: r for r in case.rows("SELECT * FROM device_metrics WHERE trace_id = ?")}
    m = Mismatches(case, "device_metrics")
    if set(got) != set(case.ref.device_metrics):
        m.add(f"devices traceforge={sorted(got)} reference={sorted(case.ref.device_metrics)}")
    for dev, expected in case.ref.device_metrics.items():
        if dev in got:
            for col in KERNEL_COLUMNS:
                m.check((dev,), col, got[dev].get(col), expected[col])
    m.done()


def test_stream_metrics(case: Case) -> None:
    got = {
        (r["device_id"], r["stream_id"]): r
        for r in case.rows("SELECT * FROM stream_metrics WHERE trace_id = ?")
    }
    m = Mismatches(case, "stream_metrics")
    if set(got) != set(case.ref.stream_metrics):
        m.add(f"(device, stream) traceforge={sorted(got)} reference={sorted(case.ref.stream_metrics)}")
    for key, expected in case.ref.stream_metrics.items():
        if key in got:
            for col in KERNEL_COLUMNS:
                m.check(key, col, got[key].get(col), expected[col])
    m.done()


def test_concurrency_levels(case: Case) -> None:
    got: dict[int, dict[int, int]] = {}
    for r in case.rows("SELECT device_id, level, time_ns FROM concurrency_levels WHERE trace_id = ?"):
        if r["time_ns"]:  # a level passed through in 0 ns may or may not have a row
            got.setdefault(r["device_id"], {})[r["level"]] = r["time_ns"]
    expected = {dev: levels for dev, levels in case.ref.concurrency_levels.items() if levels}
    m = Mismatches(case, "concurrency_levels")
    for dev in sorted(set(got) | set(expected)):
        if got.get(dev) != expected.get(dev):
            m.add(f"device {dev}: traceforge={got.get(dev)} reference={expected.get(dev)}")
    # The levels partition busy time: their sum is busy_ns, levels >= 2 sum to overlap_ns.
    for dev, levels in got.items():
        metrics = case.ref.device_metrics.get(dev, {})
        m.check((dev,), "sum(time_ns)", sum(levels.values()), metrics.get("busy_ns"))
    m.done()


def test_gaps(case: Case) -> None:
    got: dict[int, list[tuple[int, int, int]]] = {}
    for r in case.rows("SELECT device_id, start_ns, end_ns, duration_ns FROM gaps WHERE trace_id = ?"):
        got.setdefault(r["device_id"], []).append((r["start_ns"], r["end_ns"], r["duration_ns"]))
    expected = {dev: [(s, e, e - s) for s, e in gaps] for dev, gaps in case.ref.gaps.items() if gaps}
    m = Mismatches(case, "gaps")
    for dev in sorted(set(got) | set(expected)):
        g, e = sorted(got.get(dev, [])), sorted(expected.get(dev, []))
        if g != e:
            extra = sorted(set(g) - set(e))[:5]
            missing = sorted(set(e) - set(g))[:5]
            m.add(
                f"device {dev}: {len(g)} gaps vs {len(e)} in the reference; extra {extra}; missing {missing}"
            )
    m.done()


def test_kernel_summary(case: Case) -> None:
    got = {
        (r["device_id"], r["name"]): r for r in case.rows("SELECT * FROM kernel_summary WHERE trace_id = ?")
    }
    m = Mismatches(case, "kernel_summary")
    if set(got) != set(case.ref.kernel_summary):
        m.add(
            f"(device, name) only in traceforge: {sorted(set(got) - set(case.ref.kernel_summary))[:5]}; "
            f"only in the reference: {sorted(set(case.ref.kernel_summary) - set(got))[:5]}"
        )
    for key, expected in case.ref.kernel_summary.items():
        if key not in got:
            continue
        for col, value in expected.items():
            actual = got[key].get(col)
            if col == "stddev_ns" and expected["count"] == 1 and actual is None:
                continue  # one sample: nsys prints 0.0; NULL is accepted too
            m.check(key, col, actual, value)
    m.done()


def test_memop_summary(case: Case) -> None:
    got = {
        (r["device_id"], r["op"], r["copy_kind"]): r
        for r in case.rows("SELECT * FROM memop_summary WHERE trace_id = ?")
    }
    m = Mismatches(case, "memop_summary")
    if set(got) != set(case.ref.memop_summary):
        m.add(f"keys traceforge={sorted(got)} reference={sorted(case.ref.memop_summary)}")
    for key, expected in case.ref.memop_summary.items():
        if key in got:
            for col, value in expected.items():
                m.check(key, col, got[key].get(col), value)
    m.done()


def test_memops_rows(case: Case) -> None:
    got = sorted(
        (r["device_id"], r["stream_id"], r["pid"], r["correlation_id"], r["start_ns"], r["end_ns"],
         r["duration_ns"], r["op"], r["copy_kind"], r["bytes"], r["launch_tid"], r["api_start_ns"])
        for r in case.rows("SELECT * FROM memops WHERE trace_id = ?")
    )  # fmt: skip
    expected = sorted(
        (x.device_id, x.stream_id, x.pid, x.correlation_id, x.start, x.end, x.end - x.start, x.op,
         x.copy_kind, x.bytes, x.api.tid if x.api else None, x.api.start if x.api else None)
        for x in case.ref.export.memops
    )  # fmt: skip
    m = Mismatches(case, "memops")
    if got != expected:
        pairs = zip(got + [None] * len(expected), expected + [None] * len(got))
        m.add(
            f"{len(got)} rows vs {len(expected)}; first differing: {next((g, e) for g, e in pairs if g != e)}"
        )
    for r in case.rows("SELECT bytes, duration_ns, bandwidth_gbps FROM memops WHERE trace_id = ?"):
        expected_bw = r["bytes"] / r["duration_ns"] if r["duration_ns"] else None
        m.check((r["bytes"], r["duration_ns"]), "bandwidth_gbps", r["bandwidth_gbps"], expected_bw)
    m.done()


def test_kernel_launches(case: Case) -> None:
    """Per kernel: the launching call's thread and start, and launch_latency_ns = start_ns - api_start_ns."""
    got = sorted(
        (
            (r["device_id"], r["pid"], -1 if r["correlation_id"] is None else r["correlation_id"],
             r["start_ns"], r["end_ns"], r["launch_tid"], r["api_start_ns"], r["launch_latency_ns"])
            for r in case.rows(
                "SELECT device_id, pid, correlation_id, start_ns, end_ns, launch_tid, api_start_ns, "
                "launch_latency_ns FROM kernels WHERE trace_id = ?"
            )
        ),
        key=lambda t: tuple(-1 if v is None else v for v in t),
    )  # fmt: skip
    m = Mismatches(case, "kernels")
    if len(got) != len(case.ref.launches):
        m.add(f"{len(got)} kernels vs {len(case.ref.launches)} in the export")
    bad = [(g, e) for g, e in zip(got, case.ref.launches) if g != e]
    if bad:
        m.add(f"{len(bad)} kernels differ in (device, pid, corr, start, end, launch_tid, api_start, "
              "latency); "
              f"first: traceforge={bad[0][0]} reference={bad[0][1]}")  # fmt: skip
    m.done()


def test_nvtx_projection(case: Case) -> None:
    got: dict[tuple, dict[str, Any]] = {}
    for r in case.rows("SELECT * FROM nvtx_projection WHERE trace_id = ?"):
        got[(r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"])] = r
    expected = {
        (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"]): r for r in case.ref.nvtx_projection
    }
    m = Mismatches(case, "nvtx_projection")
    if set(got) != set(expected):
        m.add(
            f"ranges only in traceforge: {sorted(set(got) - set(expected))[:5]}; "
            f"only in the reference: {sorted(set(expected) - set(got))[:5]}"
        )
    for key, e in expected.items():
        if key not in got:
            continue
        cols = ["domain", "gpu_start_ns", "gpu_end_ns", "gpu_op_count", "launch_count", "kernel_count",
                "kernel_time_ns"]  # fmt: skip
        if e["kind"] == "push_pop":
            cols.append("level")
        for col in cols:
            m.check(key, col, got[key].get(col), e[col])
    m.done()


def test_nvtx_ranges(case: Case) -> None:
    got = sorted(
        (r["pid"], r["tid"], r["start_ns"], r["end_ns"], r["name"], r["domain"], r["kind"],
         r["level"] if r["kind"] == "push_pop" else None)
        for r in case.rows("SELECT * FROM nvtx_ranges WHERE trace_id = ? AND kind <> 'mark'")
    )  # fmt: skip
    expected = sorted(
        (r.pid, r.tid, r.start, r.end, r.name, r.domain, r.kind, r.level) for r in case.ref.export.nvtx
    )
    m = Mismatches(case, "nvtx_ranges")
    if got != expected:
        m.add(f"traceforge={got[:4]} reference={expected[:4]} ({len(got)} vs {len(expected)} ranges)")
    m.done()


def test_trace_row_counts(case: Case) -> None:
    (trace,) = case.rows("SELECT * FROM traces WHERE trace_id = ?")
    ex = case.ref.export
    m = Mismatches(case, "traces")
    m.check((), "kernel_count", trace["kernel_count"], len(ex.kernels))
    m.check((), "memop_count", trace["memop_count"], len(ex.memops))
    m.check((), "api_call_count", trace["api_call_count"], len(ex.api_calls))
    m.check((), "trace_id", len(trace["trace_id"]), 16)
    m.check((), "fingerprint[:16]", trace["fingerprint"][:16], trace["trace_id"])
    m.done()


def test_metric_version_on_every_derived_row(case: Case) -> None:
    from traceforge.store.schema import DERIVED_TABLES, METRIC_VERSION

    m = Mismatches(case, "metric_version")
    for table in DERIVED_TABLES:
        for r in case.rows(
            f"SELECT metric_version, count(*) AS n FROM {table} WHERE trace_id = ? GROUP BY ALL"
        ):
            m.check((table,), "metric_version", r["metric_version"], METRIC_VERSION)
    m.done()


def test_reference_percentile_is_numpy_linear() -> None:
    """The reference's percentile is numpy's default (linear) definition, the one docs/schema.md names."""
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.randrange(0, 10**9) for _ in range(n)]
        for q in (0, 1, 50, 90, 99, 100):
            ours: Optional[float] = reference.percentile(values, q)
            assert ours is not None
            assert math.isclose(ours, float(np.percentile(values, q)), rel_tol=1e-12, abs_tol=1e-6), (n, q)
    assert reference.percentile([], 50) is None


def test_reference_sweep_by_brute_force() -> None:
    """The reference sweep agrees with counting active intervals at every integer instant."""
    rng = random.Random(9)
    for _ in range(200):
        intervals = []
        for _ in range(rng.randrange(0, 12)):
            s = rng.randrange(0, 60)
            intervals.append((s, s + rng.choice([0, 0, 1, 2, 5, 10, 30])))
        active = [sum(1 for s, e in intervals if s <= t < e) for t in range(0, 100)]
        result = reference.sweep(intervals)
        assert result["busy_ns"] == sum(1 for a in active if a >= 1)
        assert result["overlap_ns"] == sum(1 for a in active if a >= 2)
        assert result["max_concurrency"] == max(active, default=0)
        for level, ns in result["levels"].items():
            assert ns == sum(1 for a in active if a == level)
        busy = [t for t, a in enumerate(active) if a]
        idle_inside = sum(1 for t in range(busy[0], busy[-1] + 1) if not active[t]) if busy else 0
        assert sum(e - s for s, e in result["gaps"]) == idle_inside


def _first_difference(got: list[Any], expected: list[Any]) -> Any:
    pairs = zip(got + [None] * len(expected), expected + [None] * len(got))
    return next((g, e) for g, e in pairs if g != e)


def test_kernel_rows(case: Case) -> None:
    """Every kernel row of the ``kernels`` view, names and launch shape resolved, equals the export's row."""
    got = sorted(
        (
            (r["device_id"], r["stream_id"], r["pid"], r["correlation_id"], r["start_ns"], r["end_ns"],
             r["duration_ns"], r["name"], r["short_name"], (r["grid_x"], r["grid_y"], r["grid_z"]),
             (r["block_x"], r["block_y"], r["block_z"]), r["launch_api"])
            for r in case.rows("SELECT * FROM kernels WHERE trace_id = ?")
        ),
        key=repr,
    )  # fmt: skip
    expected = sorted(
        (
            (k.device_id, k.stream_id, k.pid, k.correlation_id, k.start, k.end, k.end - k.start, k.name,
             k.short_name, k.grid, k.block, k.api.name if k.api else None)
            for k in case.ref.export.kernels
        ),
        key=repr,
    )  # fmt: skip
    m = Mismatches(case, "kernels")
    if got != expected:
        m.add(f"{len(got)} rows vs {len(expected)}; first differing: {_first_difference(got, expected)}")
    m.done()


def test_runtime_api_rows(case: Case) -> None:
    """Every runtime API row of the ``api_calls`` view, name resolved, equals the export's row."""
    got = sorted(
        (r["pid"], r["tid"], r["correlation_id"], r["start_ns"], r["end_ns"], r["duration_ns"],
         r["name"] or "")
        for r in case.rows("SELECT * FROM api_calls WHERE trace_id = ? AND api = 'runtime'")
    )  # fmt: skip
    expected = sorted(
        (a.pid, a.tid, a.correlation_id, a.start, a.end, a.end - a.start, a.name)
        for a in case.ref.export.api_calls
    )
    m = Mismatches(case, "api_calls")
    if got != expected:
        m.add(f"{len(got)} rows vs {len(expected)}; first differing: {_first_difference(got, expected)}")
    m.done()
