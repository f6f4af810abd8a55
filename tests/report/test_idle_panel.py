"""The report's "Why the GPU was idle" panel and GPU-metric plot, checked against the store read directly.

Real captures: ``llm_threads4_gil_osrt`` (GIL + OS calls, 4 threads), ``known_gpumetrics_osrt`` (GPU metrics)
and ``small_matmul`` (neither); the per-N panel uses the constructed sweep of ``sweep_store`` with idle
columns written into its linked traces' ``device_metrics``.
"""

from __future__ import annotations

import re
import shutil

import duckdb
import pytest

import traceforge
from sweep_store import build_sweep_store
from traceforge.report.idle import IDLE_COLUMNS, IDLE_STATES, fmt_ms

GIL = "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite"
METRICS = "known_gpumetrics_osrt_h200_nsys2025.3.sqlite"


@pytest.fixture(scope="module")
def idle_db(tmp_path_factory, real_export, small_matmul_export):
    db = tmp_path_factory.mktemp("idle") / "idle.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([real_export(GIL), real_export(METRICS), small_matmul_export])
    con = duckdb.connect(str(db), read_only=True)
    ids = dict(con.execute("SELECT source_path, trace_id FROM traces").fetchall())
    con.close()
    by_name = {next(n for n in (GIL, METRICS, "small_matmul") if n in str(p)): t for p, t in ids.items()}
    return db, by_name


@pytest.fixture(scope="module")
def idle_html(idle_db, run_cli, tmp_path_factory):
    db, _ = idle_db
    out = tmp_path_factory.mktemp("idle-html") / "report.html"
    r = run_cli("report", "--db", db, "--output", out)
    assert r.rc == 0, r
    return out.read_text(encoding="utf-8")


def _trace_part(text: str, trace_id: str) -> str:
    start = text.index(f'<section class="trace" id="trace-{trace_id}">')
    return text[start : text.index("</section>", start)]


def _idle_block(text: str, anchor: str) -> dict[str, tuple[int, str, str]]:
    """``{state: (ns, ms text, % text)}`` of the block with id ``anchor``."""
    start = text.index(f'<div class="idle" id="{anchor}">')
    block = text[start : text.index("</table>", start)]
    rows = re.findall(
        r'<tr data-state="(\w+)" data-ns="(\d+)"><td class="l">.*?</td>'
        r"<td>([\d.]+)</td><td>([^<]+)</td></tr>",
        block,
    )
    return {s: (int(ns), ms, pct) for s, ns, ms, pct in rows}


def test_idle_panel_numbers_equal_the_store(idle_db, idle_html):
    db, ids = idle_db
    con = duckdb.connect(str(db), read_only=True)
    cols = ", ".join(IDLE_COLUMNS)
    for name in (GIL, METRICS):
        tid = ids[name]
        part = _trace_part(idle_html, tid)
        assert "<h3>Why the GPU was idle</h3>" in part
        for dev, gap_total, *vals in con.execute(
            f"SELECT device_id, gap_total_ns, {cols} FROM device_metrics WHERE trace_id = ?", [tid]
        ).fetchall():
            got = _idle_block(part, f"idle-{tid}-{dev}")
            assert sum(vals) == gap_total > 0
            for (state, *_), v in zip(IDLE_STATES, vals):
                ns, ms, pct = got[state]
                assert ns == v and ms == fmt_ms(v) and pct == f"{100 * v / gap_total:.1f}%", (state, got)
            assert got["total"][0] == gap_total
            # the sentence states the total and the largest state, in seconds or ms
            m = re.search(f'id="idle-{tid}-{dev}"><h4>[^<]*</h4><p class="idlesent">([^<]*)</p>', part)
            assert m, part[:2000]
            top = max(zip(IDLE_STATES, vals), key=lambda x: x[1])
            assert m.group(1).startswith("of ") and "idle, " in m.group(1)
            assert f"the launching thread was {top[0][3]}" in html_unescape(m.group(1))
    # the GIL trace: idle time waiting for the GIL and in OS calls is there
    gil_vals = con.execute(
        "SELECT idle_gil_wait_ns, idle_os_ns FROM device_metrics WHERE trace_id = ?", [ids[GIL]]
    ).fetchone()
    assert gil_vals[0] > 0 and gil_vals[1] > 0
    con.close()


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)


def test_gil_table_rows_equal_thread_gil(idle_db, idle_html):
    db, ids = idle_db
    con = duckdb.connect(str(db), read_only=True)
    expected = con.execute(
        "SELECT pid, tid, name, gil_wait_ns, gil_wait_count, gil_hold_ns, gil_wait_max_ns FROM thread_gil "
        "WHERE trace_id = ? ORDER BY gil_wait_ns DESC, pid, tid",
        [ids[GIL]],
    ).fetchall()
    con.close()
    assert len(expected) == 5  # main thread + 4 workers
    part = _trace_part(idle_html, ids[GIL])
    table = part[part.index('<table class="gil">') :]
    table = table[: table.index("</table>")]
    header = re.findall(r"<th>([^<]*)</th>", table)
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    assert len(rows) == len(expected)
    for row, (pid, tid, name, wait, count, hold, wmax) in zip(rows, expected):
        cell = dict(zip(header, row))

        def num(c: str, cell: dict[str, str] = cell) -> int:
            return int(cell[c].replace(",", ""))

        assert (int(cell["pid"]), int(cell["tid"]), cell["name"]) == (pid, tid, name)
        assert (num("gil_wait_ns"), num("gil_wait_count"), num("gil_hold_ns"), num("gil_wait_max_ns")) == (
            wait,
            count,
            hold,
            wmax,
        )
    # a trace without GIL ranges says so
    assert "no GIL ranges in this trace" in _trace_part(idle_html, ids["small_matmul"])


def test_gpu_metric_plot_present_only_with_metrics(idle_db, idle_html):
    db, ids = idle_db
    with_metrics = _trace_part(idle_html, ids[METRICS])
    assert '<figure class="gpumetrics">' in with_metrics
    for key in ("SMs Active", "DRAM Read", "DRAM Write", "Tensor Active"):
        assert key in with_metrics
    for name in ("small_matmul", GIL):
        part = _trace_part(idle_html, ids[name])
        assert '<figure class="gpumetrics">' not in part
        assert "no GPU metrics in this trace" in part
    # binned in SQL to at most 2,000 points a series
    from traceforge.report.plots import gpu_metric_series
    from traceforge.store import Store

    with Store(db, read_only=True) as store:
        series = gpu_metric_series(store, ids[METRICS])
    assert len(series) == 4 and all(1000 < len(t) <= 2000 for t, _ in series.values())
    # small and self-contained on the real fixture
    assert len(idle_html.encode()) < 3_000_000
    assert "<script" not in idle_html
    assert not re.search(r'(src|href)="(https?:)?//', idle_html)


def test_small_matmul_panel_and_no_attribution_note(idle_db, idle_html, tmp_path, run_cli):
    db, ids = idle_db
    part = _trace_part(idle_html, ids["small_matmul"])
    assert "<h3>Why the GPU was idle</h3>" in part
    # a store whose idle columns are NULL (stored before metric version 3) gets the one-line note
    copy = tmp_path / "old.duckdb"
    shutil.copyfile(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE device_metrics SET " + ", ".join(f"{c} = NULL" for c in IDLE_COLUMNS))
    con.execute("UPDATE thread_gil SET name = '<b>evil</b>' WHERE tid = (SELECT min(tid) FROM thread_gil)")
    con.close()
    out = tmp_path / "old.html"
    r = run_cli("report", "--db", copy, "--output", out, "--trace", ids[GIL])
    assert r.rc == 0, r
    text = out.read_text(encoding="utf-8")
    assert "idle attribution not stored for this trace" in text and 'class="idlebar"' not in text
    assert "<b>evil</b>" not in text and "&lt;b&gt;evil&lt;/b&gt;" in text


def test_idle_per_n_of_a_sweep(tmp_path, run_cli):
    db = tmp_path / "sweep.duckdb"
    build_sweep_store(db)
    con = duckdb.connect(str(db))
    # each linked trace: idle states growing with its busy time, so every N differs
    sets = ", ".join(f"{c} = busy_ns // {k + 2}" for k, c in enumerate(IDLE_COLUMNS))
    con.execute(f"UPDATE device_metrics SET {sets}")
    con.execute(f"UPDATE device_metrics SET gap_total_ns = {' + '.join(IDLE_COLUMNS)}")
    sums = ", ".join(f"sum(d.{c})" for c in IDLE_COLUMNS)
    expected = con.execute(
        f"SELECT c.n, {sums} FROM cells c JOIN device_metrics d USING (trace_id) WHERE c.status = 'ok' "
        "GROUP BY c.n ORDER BY c.n"
    ).fetchall()
    con.close()
    out = tmp_path / "sweep.html"
    r = run_cli("report", "--db", db, "--output", out, "--run", "run1")
    assert r.rc == 0, r
    text = out.read_text(encoding="utf-8")
    assert "<h3>Why the GPU was idle, per N</h3>" in text
    assert [e[0] for e in expected] == [1, 2, 4, 8]
    for n, *vals in expected:
        got = _idle_block(text, f"sweep-ollama-m1-chat-idle-n{n}")
        for (state, *_), v in zip(IDLE_STATES, vals):
            assert got[state][0] == v and got[state][1] == fmt_ms(v)
        assert got["total"][0] == sum(vals)
