"""The self-contained HTML report: one file, figures as inline SVG, inline CSS, no script, no network.

Sections: per trace a header, its device metrics, why the GPU was idle (idle attribution per device, GIL
wait per thread), a GPU timeline of a window (one lane per stream, concurrency level over time) with the key
GPU metrics under it, the gap histogram and the kernel-time breakdown; per sweep (backend, model, workload)
the degradation curves with CIs and the boundary/cliff marked, the per-N table, idle attribution per N, and
the comparison table of every N against the baseline N on request throughput, latency and TTFT
(Holm-corrected as one family).
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..store.sql_params import bind
from .idle import CSS as _IDLE_CSS

if TYPE_CHECKING:
    from ..analysis.sweep_analysis import SweepAnalysis
    from ..store import Store

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222}
h1{font-size:1.6em;margin-bottom:0.2em} h2{border-bottom:2px solid #4C72B0;padding-bottom:4px;margin-top:2em}
h3{margin-top:1.4em;color:#333} .meta{color:#666;font-size:0.9em}
table{border-collapse:collapse;font-size:0.82em;margin:8px 0 16px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right} th{background:#eef2f8}
td.l,th.l{text-align:left;max-width:520px;overflow-wrap:anywhere}
figure{margin:10px 0} .wide{overflow-x:auto} figure svg{max-width:100%;height:auto}
.note{color:#8a5a00;font-size:0.88em} nav a{margin-right:12px}
"""

_TRACE_METRICS = (
    "device_id",
    "kernel_count",
    "kernel_time_ns",
    "span_ns",
    "busy_ns",
    "utilization",
    "max_concurrency",
    "overlap_ns",
    "gap_count",
    "gap_total_ns",
    "gap_p50_ns",
    "gap_p99_ns",
    "memcpy_count",
    "memcpy_bytes",
    "launch_latency_p50_ns",
    "stream_count",
)
_REQUEST_METRICS = ("requests.tokens_per_s", "requests.wall_ms", "requests.ttft_ms")


def _graph_section(store: Store, trace_id: str) -> list[str]:
    """The CUDA graphs of a trace (``graph_summary``), with what graph mode hides; nothing without graphs."""
    rows = store.con.execute(
        bind(
            "SELECT s.device_id, s.graph_id, s.count, s.total_ns, s.avg_ns, s.min_ns, s.max_ns, "
            "t.cuda_graph_trace FROM graph_summary s JOIN traces t USING (trace_id) "
            "WHERE s.trace_id = ? ORDER BY s.device_id, s.graph_id",
            [trace_id],
        )
    ).fetchall()
    if not rows:
        return []
    columns = ["device_id", "graph_id", "count", "total_ns", "avg_ns", "min_ns", "max_ns"]
    parts = ["<h3>CUDA graphs</h3>", table_html([dict(zip(columns, r)) for r in rows], columns)]
    if rows[0][7] == "graph":
        parts.append(
            '<p class="note">Graph executions recorded whole (<code>--cuda-graph-trace=graph</code>): '
            "they count in busy time and gaps as one activity each, but the kernel tables do not see inside "
            "them (re-capture with <code>--cuda-graph-trace=node</code> for that).</p>"
        )
    return parts


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "–"
        a = abs(v)
        if a != 0 and (a < 1e-3 or a >= 1e7):
            return f"{v:.3g}"
        return f"{v:,.4g}" if a < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, css_class: str = "") -> str:
    """Render ``rows`` (dicts) as an HTML table of ``columns``; text cells left-aligned."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cls = ' class="l"' if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{css_class}"' if css_class else ""
    table = f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="wide">{table}</div>'


def _figure_html(svg: str, caption: str, kind: str) -> str:
    return f'<figure class="{kind}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _has_table(store: Store, name: str) -> bool:
    row = store.con.execute(
        bind(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
            [name],
        ),
    ).fetchone()
    return bool(row and row[0])


#: How to open a Perfetto file (the address as text, not a link: the report needs no network).
_PERFETTO_HOWTO = (
    "To open it, go to <code>https://ui.perfetto.dev</code>, choose <b>Open trace file</b> and pick the "
    "file: the UI reads it in the browser, nothing is uploaded. A track per GPU stream (kernels, "
    "memcpy/memset, CUDA graphs) and per CPU thread (CUDA API calls; NVTX, GIL, OS runtime under it), a flow "
    "arrow from each launch to its GPU work, and counters of kernel concurrency, utilization and GPU metrics."
)


def _perfetto_section(trace_id: str, link: tuple[str, int] | None) -> str:
    """Where this trace's Perfetto timeline is (``link``: relative path and size), or how to make one."""
    command = (
        f"<code>traceforge export --format perfetto --trace {html.escape(trace_id)} "
        f"--output {html.escape(trace_id)}.pftrace</code>"
    )
    if link is None:
        where = f"Write the whole capture as a Perfetto timeline with {command}."
    else:
        href, size = link
        anchor = f'<a href="{html.escape(href)}">{html.escape(href)}</a>'
        where = (
            f"The whole capture as a Perfetto timeline: {anchor} "
            f"({size / 1e6:.1f} MB, beside this report; {command} writes it again)."
        )
    return f'<h3>Timeline in Perfetto</h3><p class="perfetto">{where} {_PERFETTO_HOWTO}</p>'


def _trace_section(
    store: Store,
    trace_id: str,
    window_ms: tuple[float, float] | None,
    perfetto: tuple[str, int] | None = None,
) -> str:
    from . import idle, plots

    meta = store.con.execute(
        bind(
            "SELECT source_path, gpus, nsys_version, schema_version, kernel_count, memop_count, nvtx_count "
            "FROM traces WHERE trace_id = ?",
            [trace_id],
        ),
    ).fetchone()
    parts = [
        f'<section class="trace" id="trace-{html.escape(trace_id)}">',
        f"<h2>Trace {html.escape(trace_id)}</h2>",
    ]
    if meta:
        src, gpus, nsys_v, schema_v, kc, mc, nc = meta
        parts.append(
            f'<p class="meta">{html.escape(str(src))}<br>GPUs: {html.escape(str(gpus))} · nsys '
            f"{html.escape(str(nsys_v))} (schema {html.escape(str(schema_v))}) · {_fmt(kc)} kernels · "
            f"{_fmt(mc)} memops · {_fmt(nc)} NVTX ranges</p>"
        )
    cols = ", ".join(_TRACE_METRICS)
    dm = store.con.execute(
        bind(f"SELECT {cols} FROM device_metrics WHERE trace_id = ? ORDER BY device_id", [trace_id])
    ).fetchall()
    parts.append("<h3>Device metrics</h3>")
    if dm:
        # one column per device, one row per metric: the table stays narrow whatever the metric count
        devices = [f"device {r[0]}" for r in dm]
        rows = [
            {"metric": m, **{d: r[i] for d, r in zip(devices, dm)}} for i, m in enumerate(_TRACE_METRICS) if i
        ]
        parts.append(table_html(rows, ["metric", *devices], css_class="metrics"))
    else:
        parts.append('<p class="note">no device_metrics rows for this trace</p>')
    parts.extend(_graph_section(store, trace_id))
    parts.append(idle.trace_idle_section(store, trace_id))
    parts.append("<h3>GPU timeline</h3>")
    fig = plots.timeline_figure(store, trace_id, window_ms=window_ms)
    parts.append(
        _figure_html(
            plots.to_svg(fig),
            "The whole capture's utilization (zoom window shaded), the zoom window's lanes (one per stream, "
            "binned by kernel family when it holds many events) and its mean concurrency.",
            "timeline",
        )
    )
    parts.append(_perfetto_section(trace_id, perfetto))
    parts.append("<h3>GPU metrics</h3>")
    mfig = plots.gpu_metrics_figure(store, trace_id) if _has_table(store, "gpu_metric_summary") else None
    if mfig is None:
        parts.append(
            '<p class="note">no GPU metrics in this trace '
            "(capture with <code>--gpu-metrics-devices</code>)</p>"
        )
    else:
        names = ", ".join(plots.KEY_GPU_METRICS)
        parts.append(
            _figure_html(plots.to_svg(mfig), f"Key GPU metrics ({names}), binned means.", "gpumetrics")
        )
    parts.append("<h3>Idle gaps</h3>")
    parts.append(
        _figure_html(
            plots.to_svg(plots.gap_histogram_figure(store, trace_id)),
            "Idle time (top) and number of gaps (bottom) by gap length.",
            "gaps",
        )
    )
    parts.append("<h3>Kernel time</h3>")
    fig = plots.kernel_breakdown_figure(store, trace_id)
    parts.append(_figure_html(plots.to_svg(fig), "Kernel time by name.", "kernels"))
    top = store.con.execute(
        bind(
            "SELECT name, count(*) AS count, sum(duration_ns) AS total_ns, avg(duration_ns) AS avg_ns "
            "FROM kernels "
            "WHERE trace_id = ? GROUP BY name ORDER BY total_ns DESC LIMIT 15",
            [trace_id],
        ),
    ).fetchall()
    if top:
        total = store.con.execute(
            bind("SELECT sum(duration_ns) FROM kernels WHERE trace_id = ?", [trace_id])
        ).fetchone()
        denom = float(total[0]) if total and total[0] else 1.0
        rows = [
            {
                "name": r[0] if len(r[0]) <= 160 else r[0][:159] + "…",
                "count": int(r[1]),
                "total_ns": int(r[2]),
                "avg_ns": float(r[3]),
                "share": r[2] / denom,
            }
            for r in top
        ]
        parts.append(table_html(rows, ["name", "count", "total_ns", "avg_ns", "share"], css_class="kernels"))
    parts.append("</section>")
    return "\n".join(parts)


def _sweep_comparisons(store: Store, a: SweepAnalysis) -> str:
    from ..analysis.compare import Condition, Group, Schema, compare_parsed, parse_metric

    schema = Schema(store)
    base: list[Condition] = []
    present = {str(r[0]) for r in store.con.execute("SELECT column_name FROM (DESCRIBE cells)").fetchall()}
    for col, val in a.config.items():
        if col not in present:
            continue
        base.append(
            Condition("cells", col, "is null", "") if val is None else Condition("cells", col, "=", str(val))
        )
    base.append(Condition("cells", "status", "=", "ok"))
    if len(a.run_ids) == 1:
        base.append(Condition("cells", "run_id", "=", a.run_ids[0]))
    ok_req = Condition("requests", "status", "=", "ok")
    groups = [
        Group(f"N={p.n}", (*base, Condition("cells", "n", "=", str(p.n)), ok_req))
        for p in sorted(a.points, key=lambda p: (p.n != a.baseline_n, p.n))
        if p.requests_ok > 0
    ]
    if len(groups) < 2:
        return '<p class="note">fewer than two N with successful requests: nothing to compare</p>'
    metrics = [parse_metric(m, schema) for m in _REQUEST_METRICS]
    result = compare_parsed(store, schema, metrics, groups, strict=False, bootstrap_resamples=2000)
    rows = [c.to_dict() for c in result.comparisons]
    cols = [
        "metric",
        "baseline",
        "group",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "rel_diff",
        "cohens_d",
        "welch_p",
        "p_adjusted",
        "mwu_p",
        "verdict",
    ]
    return table_html(rows, cols, css_class="comparison")


def _sweep_section(store: Store, a: SweepAnalysis) -> str:
    from . import idle, plots

    anchor = html.escape("sweep-" + "-".join(str(x) for x in (a.backend, a.model, a.workload)))
    parts = [f'<section class="sweep" id="{anchor}">', f"<h2>Sweep {html.escape(a.label)}</h2>"]
    parts.append(f'<p class="meta">runs: {html.escape(", ".join(a.run_ids))}</p>')
    boundary = f"N={a.boundary_n} ({a.boundary_reason})" if a.boundary_n is not None else "not reached"
    items = [
        f"breakdown boundary: {boundary}",
        f"cliff (per-request speed below {a.cliff_ratio:g}× N={a.baseline_n}): "
        + (f"N={a.cliff_n}" if a.cliff_n is not None else "not reached"),
        "throughput peak: " + (f"N={a.peak_n}, {_fmt(a.peak_tps)} tok/s" if a.peak_n is not None else "–"),
    ]
    if a.amdahl_serial_fraction is not None:
        se = f" ± {a.amdahl_serial_fraction_se:.3f}" if a.amdahl_serial_fraction_se is not None else ""
        r2 = f", R² = {a.amdahl_r2:.3f}" if a.amdahl_r2 is not None else ""
        items.append(f"Amdahl serial fraction s = {a.amdahl_serial_fraction:.3f}{se}{r2}")
    parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
    for note in a.notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append(_figure_html(plots.to_svg(plots.sweep_figure(a)), "Degradation curves against N.", "sweep"))
    cols = [
        "n",
        "cells_ok",
        "cells_failed",
        "requests_ok",
        "per_agent_tps",
        "per_agent_tps_ci_low",
        "per_agent_tps_ci_high",
        "aggregate_tps",
        "aggregate_tps_ci_low",
        "aggregate_tps_ci_high",
        "efficiency",
        "p95_latency_ms",
        "p95_multiplier",
        "ttft_ms",
    ]
    parts.append(table_html([p.row() for p in a.points], cols, css_class="points"))
    parts.append(idle.sweep_idle_section(store, a.config, a.run_ids, anchor))
    parts.append(f"<h3>Comparisons against N={a.baseline_n} (Holm-corrected)</h3>")
    parts.append(_sweep_comparisons(store, a))
    parts.append("</section>")
    return "\n".join(parts)


def build_report(
    store: Store,
    *,
    trace_ids: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    window_ms: tuple[float, float] | None = None,
    max_traces: int = 20,
    perfetto_dir: str | None = None,
    timelines: list[str] | None = None,
) -> str:
    """Build the report's HTML text.

    Args:
        store: an open store.
        trace_ids: traces to include (ids or unique prefixes); default: the newest ``max_traces`` traces, or
            none when only ``run_ids`` are given.
        run_ids: runs whose sweeps to include; default: all runs (none when ``trace_ids`` is given alone).
        window_ms: timeline zoom window ``(start, end)`` in ms from the capture start (default: the densest
            400 consecutive kernels).
        max_traces: cap on the traces included by default.
        perfetto_dir: write each trace's Perfetto timeline into this directory (relative links are made
            from the directory above it); None: the report only says how to write one.
        timelines: when given, the paths of the Perfetto files written are appended to it.

    Raises:
        QueryError: a trace or run id is unknown, or there is nothing to report.
    """
    from ..analysis.diff import resolve_trace
    from ..analysis.sweep_analysis import analyze_sweeps

    if trace_ids:
        traces = [resolve_trace(store, t) for t in trace_ids]
    elif run_ids:
        traces = []  # only the sweeps asked for
    elif _has_table(store, "traces"):
        traces = [
            r[0]
            for r in store.con.execute(
                bind(
                    "SELECT trace_id FROM traces ORDER BY ingested_at DESC NULLS LAST, trace_id LIMIT ?",
                    [max_traces],
                ),
            ).fetchall()
        ]
    else:
        traces = []
    analyses: list[SweepAnalysis] = []
    has_cells = _has_table(store, "cells") and _has_table(store, "requests")
    if run_ids:
        analyses = analyze_sweeps(store, run_ids=list(run_ids))
    elif not trace_ids and has_cells:
        count = store.con.execute("SELECT count(*) FROM cells").fetchone()
        if count and count[0]:
            analyses = analyze_sweeps(store)
    if not traces and not analyses:
        raise QueryError("nothing to report: the store has no traces and no sweep results")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#trace-{html.escape(t)}">trace {html.escape(t)}</a>' for t in traces)
    nav += "".join(
        f'<a href="#{html.escape("sweep-" + "-".join(str(x) for x in (a.backend, a.model, a.workload)))}">'
        f"sweep {html.escape(a.label)}</a>"
        for a in analyses
    )
    links: dict[str, tuple[str, int] | None] = {t: None for t in traces}
    if perfetto_dir is not None:
        from ..timeline_export import export_timeline

        if traces:
            os.makedirs(perfetto_dir, exist_ok=True)
        base = os.path.dirname(os.path.abspath(perfetto_dir))
        for t in traces:
            done = export_timeline(store, t, os.path.join(perfetto_dir, f"{t}.pftrace"))
            links[t] = (os.path.relpath(done.path, base), int(done.stats.get("bytes", 0)))
            if timelines is not None:
                timelines.append(done.path)
    body = [_trace_section(store, t, window_ms, links[t]) for t in traces]
    body += [_sweep_section(store, a) for a in analyses]
    from .. import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>traceforge report</title><style>{_CSS}{_IDLE_CSS}</style></head><body>"
        f'<h1>traceforge report</h1><p class="meta">{html.escape(os.path.basename(store.path))} · '
        f"{len(traces)} trace(s), {len(analyses)} sweep(s) · traceforge {__version__} · {now}</p>"
        f"<nav>{nav}</nav>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    store: Store,
    output: str,
    *,
    trace_ids: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    window_ms: tuple[float, float] | None = None,
    perfetto: bool = False,
    timelines: list[str] | None = None,
) -> str:
    """Build the report and write it to ``output`` atomically (:func:`traceforge.outputs.atomic_output`).

    With ``perfetto``, each trace's Perfetto timeline is written beside it, in ``<report name>_perfetto/``,
    and linked from the trace's section; their paths are appended to ``timelines`` when given.

    Returns:
        The path written.

    Raises:
        OutputError: ``output`` is a directory, FIFO, device or socket, or cannot be written.
    """
    from ..outputs import atomic_output, output_target

    output_target(output)  # refuse a directory, FIFO or device before the work of building the report
    stem = os.path.splitext(os.path.abspath(output))[0]
    text = build_report(
        store,
        trace_ids=trace_ids,
        run_ids=run_ids,
        window_ms=window_ms,
        perfetto_dir=f"{stem}_perfetto" if perfetto else None,
        timelines=timelines,
    )
    with atomic_output(output) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return output
