"""The report's kernel chart groups kernels by the same full name as the table beside it (issue 16, item 14).

It grouped by base name (``short_name``), so two instantiations of one template (small_matmul's two
``vectorized_elementwise_kernel``) were one bar that matched no row of the table. The reference groups the
export's kernels by demangled name with ``sqlite3``.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import traceforge
from traceforge.report import plots


def test_kernel_chart_bars_are_the_tables_full_names(small_matmul_export: Path, tmp_path: Path) -> None:
    con = sqlite3.connect(f"file:{small_matmul_export}?mode=ro", uri=True)
    by_name = con.execute(
        "SELECT s.value, count(*), sum(k.end - k.start) AS t FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN StringIds s ON s.id = k.demangledName GROUP BY s.value ORDER BY t DESC, s.value"
    ).fetchall()
    short_names = con.execute("SELECT count(DISTINCT shortName) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[
        0
    ]
    con.close()
    assert len(by_name) > short_names, "the capture must have a base name shared by two full names"
    with traceforge.connect(tmp_path / "chart.duckdb") as tf:
        [outcome] = tf.ingest([small_matmul_export])
        fig = plots.kernel_breakdown_figure(tf.store, outcome.trace_id)
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(widths) == len(by_name)
    for (name, count, total), width, label in zip(by_name, widths, labels):
        assert abs(width - total / 1e6) < 1e-9, (name, width, total)
        assert re.search(rf"\(×{count}\)$", label), (name, label)
        stem = label.split(" (×")[0].split(" #")[0].rstrip("…")
        assert name.startswith(stem), (name, label)
    # Labels of different names never read the same.
    assert len(set(labels)) == len(labels)
