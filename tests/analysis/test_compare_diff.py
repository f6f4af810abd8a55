"""compare, sweep analysis and diff over real DuckDB stores.

The sweep store is input data written with the runners' own ``insert_rows`` into the contract's tables; its
answers are known by construction (Amdahl's law with s = 0.3, so every threshold crossing is computed by hand
below). Statistics are checked against scipy called directly on the constructed values; the diff is checked
against counts read straight from the nsys exports with sqlite3.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

import traceforge
from sweep_store import (
    AGG1,
    JITTER,
    NS,
    REPS,
    REQS_PER_AGENT,
    S_TRUE,
    TOKENS,
    amdahl,
    build_sweep_store,
    busy_ns,
    per_request_speed,
)
from traceforge.errors import QueryError


@pytest.fixture(scope="module")
def sweep_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sweep_store(tmp_path_factory.mktemp("sweep") / "sweep.duckdb")


@pytest.fixture(scope="module")
def store(sweep_db: Path):
    from traceforge.store import Store

    with Store(sweep_db, read_only=True) as s:
        yield s


# --- sweep analysis -----------------------------------------------------------------------------------------


def test_sweep_known_by_construction(store):
    from traceforge.analysis.sweep_analysis import analyze_sweeps

    [a] = analyze_sweeps(store)
    assert (a.backend, a.model, a.workload, a.baseline_n) == ("ollama", "m1", "chat", 1)
    pts = {p.n: p for p in a.points}
    for n in NS:
        p = pts[n]
        assert p.cells_ok == REPS
        assert p.requests_ok == REPS * n * REQS_PER_AGENT
        assert p.per_agent_tps.mean == pytest.approx(per_request_speed(n))
        assert p.aggregate_tps.mean == pytest.approx(AGG1 * amdahl(n))
        assert p.efficiency == pytest.approx(amdahl(n) / n)
        # per-repetition aggregate = N * v * (1 + jitter): Cox's log-scale interval of those three values
        # (a throughput is positive; issue 16 item 14), computed here from its formula
        agg = [n * per_request_speed(n) * (1 + j) for j in JITTER]
        y = np.log(agg)
        s2 = float(np.var(y, ddof=1))
        half = st.t.ppf(0.975, 2) * np.sqrt(s2 / 3 + s2**2 / 4)
        lo, hi = np.exp(np.mean(y) + s2 / 2 - half), np.exp(np.mean(y) + s2 / 2 + half)
        assert (p.aggregate_tps.ci_low, p.aggregate_tps.ci_high) == pytest.approx((lo, hi))
        walls = [
            1000 * TOKENS / (per_request_speed(n) * (1 + j))
            for j in JITTER
            for _ in range(n * REQS_PER_AGENT)
        ]
        walls1 = [
            1000 * TOKENS / (per_request_speed(1) * (1 + j)) for j in JITTER for _ in range(REQS_PER_AGENT)
        ]
        assert p.p95_multiplier == pytest.approx(np.percentile(walls, 95) / np.percentile(walls1, 95))
        assert p.ttft_ms.mean == pytest.approx(50.0 * n + (n - 1) / 2)
    assert pts[8].cells_failed == 1 and pts[8].requests_error == 0  # the failed cell's requests are left out
    # efficiency: N=2 0.769, N=4 0.526 (< 0.65) -> boundary at N=4 by efficiency
    assert a.boundary_n == 4 and "efficiency" in a.boundary_reason
    # per-request speed ratio S(N)/N: N=4 0.526, N=8 0.323 (< 0.5) -> cliff at N=8
    assert a.cliff_n == 8
    assert a.peak_n == 8 and a.peak_tps == pytest.approx(AGG1 * amdahl(8))
    assert a.amdahl_serial_fraction == pytest.approx(S_TRUE, abs=1e-6)
    assert a.amdahl_r2 == pytest.approx(1.0)


def test_sweep_thresholds_are_adjustable(store):
    from traceforge.analysis.sweep_analysis import analyze_sweeps

    # p95 multiplier is s*N + 1 - s: 1.3, 1.9, 3.1. With efficiency 0.5 (crossed at N=8 only) and latency 1.5
    # (crossed at N=4), the boundary is N=4 by latency.
    [a] = analyze_sweeps(store, efficiency_threshold=0.5, latency_threshold=1.5, cliff_ratio=0.6)
    assert a.boundary_n == 4 and "p95" in a.boundary_reason and "efficiency" not in a.boundary_reason
    assert a.cliff_n == 4  # 0.526 < 0.6
    [b] = analyze_sweeps(store, efficiency_threshold=0.1, latency_threshold=10, cliff_ratio=0.1)
    assert b.boundary_n is None and b.cliff_n is None


@pytest.mark.slow
def test_sweep_cli_formats_and_unknown_run(sweep_db, run_cli):
    r = run_cli("sweep", "--db", sweep_db, "--format", "json")
    assert r.rc == 0, r
    [doc] = json.loads(r.stdout)
    assert doc["boundary_n"] == 4 and doc["cliff_n"] == 8
    assert [p["n"] for p in doc["points"]] == list(NS)
    r = run_cli("sweep", "--db", sweep_db)
    assert r.rc == 0 and "breakdown boundary: N=4" in r.stdout and "Amdahl serial fraction: 0.300" in r.stdout
    r = run_cli("sweep", "--db", sweep_db, "--run", "nope")
    assert r.rc == 1 and r.stderr.strip() == "traceforge: error: no run 'nope' in the store (runs: run1)"


# --- compare ---


def _busy(n: int) -> list[float]:
    return [float(busy_ns(n, rep)) for rep in range(REPS)]


def test_compare_trace_metric_across_cells(store):
    from traceforge.analysis.compare import compare_groups

    res = compare_groups(store, ["device_metrics.busy_ns"], ["cells.n=1", "cells.n=8"])
    [c] = res.comparisons
    a, b = _busy(1), _busy(8)
    ref = st.ttest_ind(b, a, equal_var=False)
    assert (c.result.n_a, c.result.n_b) == (3, 3)  # the failed N=8 cell has no trace: not counted
    assert c.result.welch_t == pytest.approx(ref.statistic)
    assert c.result.welch_p == pytest.approx(ref.pvalue)
    sp = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert c.result.cohens_d == pytest.approx((np.mean(b) - np.mean(a)) / sp)
    assert c.p_adjusted == pytest.approx(ref.pvalue)  # family of one
    assert "higher" in c.verdict and "significant" in c.verdict
    assert [g.description.mean for g in res.groups] == pytest.approx([np.mean(a), np.mean(b)])


def test_compare_by_column_with_holm_family(store):
    from traceforge.analysis.compare import compare_groups

    res = compare_groups(
        store,
        ["requests.tokens_per_s", "device_metrics.busy_ns"],
        by="cells.n",
        baseline="1",
        correction="holm",
    )
    assert [(c.metric, c.group) for c in res.comparisons] == [
        ("requests.tokens_per_s", "cells.n=2"),
        ("requests.tokens_per_s", "cells.n=4"),
        ("requests.tokens_per_s", "cells.n=8"),
        ("device_metrics.busy_ns", "cells.n=2"),
        ("device_metrics.busy_ns", "cells.n=4"),
        ("device_metrics.busy_ns", "cells.n=8"),
    ]
    raw = []
    for n in (2, 4, 8):
        a = [per_request_speed(1) * (1 + j) for j in JITTER for _ in range(REQS_PER_AGENT)]
        b = [per_request_speed(n) * (1 + j) for j in JITTER for _ in range(n * REQS_PER_AGENT)]
        raw.append(st.ttest_ind(b, a, equal_var=False).pvalue)
    for n in (2, 4, 8):
        raw.append(st.ttest_ind(_busy(n), _busy(1), equal_var=False).pvalue)
    # Holm by hand: sort, multiply by (k - rank), running max, back to input order
    order = np.argsort(raw)
    adj = np.empty(6)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (6 - rank) * raw[i]))
        adj[i] = running
    assert [c.result.welch_p for c in res.comparisons] == pytest.approx(raw)
    assert [c.p_adjusted for c in res.comparisons] == pytest.approx(adj.tolist())
    # the request-level filter counts requests of ok cells only where the status says so: N=8 has the failed
    # cell's error request too (no tokens_per_s), left out as NULL
    n8 = next(g for g in res.groups if g.metric == "requests.tokens_per_s" and g.group == "cells.n=8")
    assert n8.description.n == REPS * 8 * REQS_PER_AGENT
    assert any("NULL" in note for note in res.notes)


def test_compare_semi_join_does_not_multiply_rows(store):
    from traceforge.analysis.compare import compare_groups

    # cells filtered by a condition on their requests: each cell counts once, however many requests match
    res = compare_groups(store, ["cells.wall_s"], ["requests.status=ok", "requests.status=error"])
    assert [g.description.n for g in res.groups] == [len(NS) * REPS, 1]
    # several conditions are ANDed; values are cast to the column's type
    res = compare_groups(store, ["cells.wall_s"], ["cells.n=1,cells.status=ok", "cells.n>=4,cells.status=ok"])
    assert [g.description.n for g in res.groups] == [3, 6]


def test_compare_zero_variance_metric_is_not_computable(store):
    from traceforge.analysis.compare import compare_groups

    res = compare_groups(store, ["device_metrics.max_concurrency"], ["cells.n=1", "cells.n=8"])
    [c] = res.comparisons
    assert c.result.welch_p is None and c.p_adjusted is None
    assert c.verdict.startswith("no difference")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "nope.x", "--group", "cells.n=1", "--group", "cells.n=8"], "unknown table 'nope'"),
        (
            ["--metric", "device_metrics.bsy_ns", "--group", "cells.n=1", "--group", "cells.n=8"],
            "unknown column 'device_metrics.bsy_ns'",
        ),
        (["--metric", "cells.backend", "--group", "cells.n=1", "--group", "cells.n=8"], "not numeric"),
        (
            ["--metric", "device_metrics.busy_ns", "--group", "cells.n=1", "--group", "cells.n=3"],
            "group 'cells.n=3' has no rows",
        ),
        (
            ["--metric", "device_metrics.busy_ns", "--group", "cells.m=1", "--group", "cells.n=3"],
            "unknown column 'cells.m'",
        ),
        (
            ["--metric", "device_metrics.busy_ns", "--group", "cells.n=abc", "--group", "cells.n=3"],
            "cells.n=abc",
        ),
        (["--metric", "device_metrics.busy_ns", "--group", "cells.n=1"], "at least two --group"),
        (
            ["--metric", "device_metrics.busy_ns", "--by", "cells.n", "--baseline", "3"],
            "--baseline 3 is not a value",
        ),
        (["--metric", "busy_ns", "--by", "cells.n"], "is not TABLE.COLUMN"),
    ],
)
def test_compare_cli_errors_are_one_line(sweep_db, run_cli, args, message):
    r = run_cli("compare", "--db", sweep_db, *args)
    assert r.rc == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceforge: error: ") and message in lines[0], r


@pytest.mark.slow
def test_compare_cli_formats(sweep_db, run_cli):
    base = ["compare", "--db", sweep_db, "--metric", "requests.wall_ms", "--by", "cells.n", "--baseline", "1"]
    r = run_cli(*base, "--format", "json")
    assert r.rc == 0, r
    doc = json.loads(r.stdout)
    assert doc["correction"] == "holm" and len(doc["comparisons"]) == 3
    for key in ("n", "mean", "median", "sd", "ci_low", "ci_high"):
        assert key in doc["groups"][0]
    for key in ("welch_t", "welch_p", "cohens_d", "hedges_g", "mwu_u", "mwu_p", "p_adjusted", "verdict"):
        assert key in doc["comparisons"][0]
    r = run_cli(*base, "--format", "csv", "--correction", "bh")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["group"] for row in rows] == ["cells.n=2", "cells.n=4", "cells.n=8"]
    assert all(float(row["p_adjusted"]) >= float(row["welch_p"]) for row in rows)
    r = run_cli(*base)
    assert r.rc == 0 and "Holm correction over 3 test(s)" in r.stdout and "cells.n=8 vs cells.n=1" in r.stdout


# --- diff over real exports ---


@pytest.fixture(scope="module")
def two_trace_db(tmp_path_factory, small_matmul_export, llama_export):
    db = tmp_path_factory.mktemp("diff") / "two.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export, llama_export])
        ids = dict(tf.sql("SELECT export_path, trace_id FROM traces").iter_rows())
    return db, ids[str(small_matmul_export)], ids[str(llama_export)]


def _export_kernels(path: Path) -> dict[str, tuple[int, int]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT s.value, count(*), sum(k.end - k.start) FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN StringIds s ON s.id = k.demangledName GROUP BY s.value"
    ).fetchall()
    con.close()
    return {name: (int(c), int(t)) for name, c, t in rows}


def test_diff_against_the_exports(two_trace_db, small_matmul_export, llama_export):
    from traceforge.analysis.diff import diff_traces
    from traceforge.store import Store

    db, ta, tb = two_trace_db
    ka, kb = _export_kernels(small_matmul_export), _export_kernels(llama_export)
    with Store(db, read_only=True) as store:
        d = diff_traces(store, ta, tb[:8], top=5)  # a unique prefix is accepted
    assert (d.trace_a, d.trace_b) == (ta, tb)
    for row in d.kernels.iter_rows(named=True):
        assert (row["count_a"], row["total_ns_a"]) == ka.get(row["name"], (0, 0))
        assert (row["count_b"], row["total_ns_b"]) == kb.get(row["name"], (0, 0))
    assert d.kernels.height == len(set(ka) | set(kb))
    only_a = sorted(set(ka) - set(kb), key=lambda n: -ka[n][1])[:5]
    assert d.only_a["name"].to_list() == only_a
    both = [n for n in ka if n in kb]
    top = sorted(both, key=lambda n: -abs(kb[n][1] - ka[n][1]))[:5]
    assert d.top_abs["name"].to_list() == top
    dev = {r["metric"]: r for r in d.devices.iter_rows(named=True)}
    assert dev["kernel_count"]["a"] == sum(c for c, _ in ka.values())
    assert dev["kernel_count"]["b"] == sum(c for c, _ in kb.values())
    con = sqlite3.connect(f"file:{llama_export}?mode=ro", uri=True)
    n_memcpy = con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_MEMCPY").fetchone()[0]
    n_memset = con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_MEMSET").fetchone()[0]
    req0 = con.execute("SELECT end - start FROM NVTX_EVENTS WHERE text = 'agent0/req0'").fetchone()[0]
    con.close()
    mem = d.memops
    assert mem.filter(mem["op"] == "memcpy")["count_b"].sum() == n_memcpy
    assert mem.filter(mem["op"] == "memset")["count_b"].sum() == n_memset
    nv = {r["name"]: r for r in d.nvtx.iter_rows(named=True)}
    assert nv["agent0/req0"]["total_ns_b"] == req0 and nv["agent0/req0"]["count_a"] == 0


def test_diff_cli(two_trace_db, run_cli):
    db, ta, tb = two_trace_db
    r = run_cli("diff", ta, tb, "--db", db, "--top", "3")
    assert r.rc == 0, r
    for title in (
        "== device metrics ==",
        "top movers by absolute change",
        "kernels only in A",
        "memory operations",
        "NVTX ranges",
    ):
        assert title in r.stdout
    doc = json.loads(run_cli("diff", ta, tb, "--db", db, "--format", "json").stdout)
    in_both = [k for k in doc["kernels"] if k["count_a"] and k["count_b"]]
    assert doc["trace_a"] == ta and len(doc["top_abs"]) == min(10, len(in_both))
    r = run_cli("diff", ta, "ffffffffffffffff", "--db", db)
    assert r.rc == 1
    assert (
        r.stderr.strip() == "traceforge: error: no trace 'ffffffffffffffff' in the store (2 trace(s) stored; "
        "see `traceforge traces`)"
    )


def test_diff_missing_trace_is_query_error(store):
    from traceforge.analysis.diff import diff_traces

    with pytest.raises(QueryError, match="no trace 'abc'"):
        diff_traces(store, "abc", "00000001")
