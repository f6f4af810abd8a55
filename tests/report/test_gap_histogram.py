"""The gap histogram is time-weighted: the idle time in each gap-length bin, checked against plain SQL."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

import traceforge
from traceforge.report import plots


@pytest.fixture(scope="module")
def gap_store(small_matmul_export, tmp_path_factory):
    db = tmp_path_factory.mktemp("gaps") / "store.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export])
        trace_id = tf.sql("SELECT trace_id FROM traces")["trace_id"][0]
    return db, trace_id


def _sql_bins(db, trace_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (µs, log-spaced from the shortest to the longest gap), gaps and idle time per bin, in SQL."""
    with duckdb.connect(str(db), read_only=True) as con:
        lo, hi = con.execute(
            "SELECT min(duration_ns), max(duration_ns) FROM gaps WHERE trace_id = ? AND duration_ns > 0",
            [trace_id],
        ).fetchone()
        edges = np.logspace(np.log10(lo / 1e3), np.log10(hi / 1e3 * 1.0001), 41)
        counts, times = [], []
        for i in range(40):
            upper = "<=" if i == 39 else "<"
            n, t = con.execute(
                "SELECT count(*), coalesce(sum(duration_ns), 0) FROM gaps WHERE trace_id = ? "
                f"AND duration_ns > 0 AND duration_ns / 1e3 >= ? AND duration_ns / 1e3 {upper} ?",
                [trace_id, float(edges[i]), float(edges[i + 1])],
            ).fetchone()
            counts.append(n)
            times.append(float(t))
    return edges, np.asarray(counts), np.asarray(times)


def test_binned_time_matches_sql(gap_store):
    db, trace_id = gap_store
    edges, counts, times = _sql_bins(db, trace_id)
    with traceforge.connect(db, read_only=True) as tf:
        hist = plots.gap_histogram_bins(tf.store, trace_id)
    np.testing.assert_allclose(hist.edges_us, edges, rtol=1e-12)
    assert hist.counts.tolist() == counts.tolist()
    np.testing.assert_allclose(hist.time_ns, times, rtol=1e-12)
    with duckdb.connect(str(db), read_only=True) as con:
        (total,) = con.execute("SELECT sum(duration_ns) FROM gaps WHERE trace_id = ?", [trace_id]).fetchone()
    assert hist.total_ns == pytest.approx(float(total))
    # small_matmul: 22 gaps, 3 of them over 1 ms hold 99% of the idle time; by count they are 3 of 22.
    long_bins = hist.edges_us[:-1] >= 1e3
    assert hist.counts[long_bins].sum() == 3
    assert hist.time_ns[long_bins].sum() / hist.total_ns > 0.99


def test_figure_draws_time_and_count(gap_store):
    db, trace_id = gap_store
    _edges, counts, times = _sql_bins(db, trace_id)
    with traceforge.connect(db, read_only=True) as tf:
        fig = plots.gap_histogram_figure(tf.store, trace_id)
    time_ax, count_ax = fig.axes
    assert "idle time" in time_ax.get_ylabel() and count_ax.get_ylabel() == "gaps"
    np.testing.assert_allclose([p.get_height() for p in time_ax.patches], times / 1e6, rtol=1e-12)
    assert [p.get_height() for p in count_ax.patches] == counts.tolist()
    assert "99% of it in gaps > 1 ms" in time_ax.get_title()


def test_no_gaps_is_an_empty_figure(gap_store):
    db, _trace_id = gap_store
    with traceforge.connect(db, read_only=True) as tf:
        hist = plots.gap_histogram_bins(tf.store, "0000000000000000")
        fig = plots.gap_histogram_figure(tf.store, "0000000000000000")
    assert hist.counts.size == 0 and hist.total_ns == 0
    assert fig.axes
