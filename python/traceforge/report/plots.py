"""Single figures over the store: GPU timeline, gap histogram, kernel-time breakdown, sweep curves.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no GUI backend);
:func:`save` writes one as PNG or SVG and :func:`to_svg` returns the inline SVG text the HTML report embeds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..store.sql_params import bind

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..analysis.sweep_analysis import SweepAnalysis
    from ..store import Store

#: Kernels in the default timeline window (the densest run of that many consecutive kernels).
DEFAULT_WINDOW_KERNELS = 400
_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974")


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small files, searchable in a browser
    matplotlib.rcParams["svg.hashsalt"] = "traceforge"  # stable ids, so the same input gives the same file
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def save(fig: Figure, output: str) -> None:
    """Write ``fig`` to ``output`` atomically; the format follows the extension (``.png`` or ``.svg``).

    Raises:
        QueryError: another extension.
        OutputError: ``output`` is a directory, FIFO, device or socket, or cannot be written.
    """
    from ..outputs import atomic_output

    lower = output.lower()
    if not (lower.endswith(".png") or lower.endswith(".svg")):
        raise QueryError(f"--output {output}: the file name must end in .png or .svg")
    with atomic_output(output) as tmp:
        fig.savefig(tmp, format=lower[-3:], dpi=120)


def to_svg(fig: Figure) -> str:
    """Return the figure as an ``<svg>`` element (no XML prolog or DOCTYPE) for inline embedding."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def _empty(fig: Figure, ax: Any, message: str) -> Figure:
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#555")
    return fig


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def default_device(store: Store, trace_id: str) -> int | None:
    """Return the device with the most kernels in a trace (None when the trace has no kernels)."""
    row = store.con.execute(
        bind(
            "SELECT device_id FROM kernels WHERE trace_id = ? GROUP BY device_id "
            "ORDER BY count(*) DESC, device_id "
            "LIMIT 1",
            [trace_id],
        ),
    ).fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class Window:
    """A time window on a device, in the capture's nanoseconds."""

    device_id: int
    start_ns: int
    end_ns: int
    origin_ns: int  # first kernel start on the device: axis zero


def choose_window(
    store: Store,
    trace_id: str,
    device_id: int | None = None,
    window_ms: tuple[float, float] | None = None,
    max_kernels: int = DEFAULT_WINDOW_KERNELS,
) -> Window | None:
    """Pick the timeline window: ``window_ms`` (from the device's first kernel) or the densest stretch.

    Returns None when the trace has no kernels on that device.
    """
    dev = device_id if device_id is not None else default_device(store, trace_id)
    if dev is None:
        return None
    row = store.con.execute(
        bind(
            "SELECT min(start_ns), max(end_ns) FROM kernels WHERE trace_id = ? AND device_id = ?",
            [trace_id, dev],
        )
    ).fetchone()
    if row is None or row[0] is None:
        return None
    origin = int(row[0])
    if window_ms is not None:
        lo, hi = window_ms
        if hi <= lo:
            raise QueryError(f"--window {lo}:{hi}: the end must be after the start")
        return Window(dev, origin + int(lo * 1e6), origin + int(hi * 1e6), origin)
    import numpy as np

    # Default window: the densest run of ``max_kernels`` consecutive kernels (the shortest time holding that
    # many), so the picture shows the GPU at work rather than model loading or idle stretches.
    arrays = store.con.execute(
        bind(
            "SELECT start_ns, end_ns FROM kernels WHERE trace_id = ? AND device_id = ? ORDER BY start_ns",
            [trace_id, dev],
        ),
    ).fetchnumpy()
    starts = np.asarray(arrays["start_ns"], dtype=np.int64)
    ends = np.maximum.accumulate(np.asarray(arrays["end_ns"], dtype=np.int64))
    k = min(max_kernels, starts.size)
    spans = ends[k - 1 :] - starts[: starts.size - k + 1]
    i = int(np.argmin(spans))
    return Window(dev, int(starts[i]), int(ends[i + k - 1]), origin)


def concurrency_steps(starts: Any, ends: Any) -> tuple[Any, Any]:
    """Step function of the number of active intervals: (times, level after each time).

    Half-open intervals: an end at t and a start at t do not overlap (ends are applied first).
    """
    import numpy as np

    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    times = np.concatenate([e, s])
    delta = np.concatenate([-np.ones(e.size, dtype=np.int64), np.ones(s.size, dtype=np.int64)])
    order = np.lexsort((delta, times))  # at equal times, -1 (ends) sort before +1 (starts)
    times, delta = times[order], delta[order]
    level = np.cumsum(delta)
    # keep the last level at each distinct time
    last = np.r_[times[1:] != times[:-1], True]
    return times[last], level[last]


def timeline_figure(
    store: Store,
    trace_id: str,
    *,
    device_id: int | None = None,
    window_ms: tuple[float, float] | None = None,
    max_kernels: int = DEFAULT_WINDOW_KERNELS,
) -> Figure:
    """Draw the GPU timeline of a window: one lane per stream (memops in grey), concurrency level below."""
    import numpy as np

    win = choose_window(store, trace_id, device_id, window_ms, max_kernels)
    fig, axes = _figure(11, 4.8, 2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax, axc = axes[0][0], axes[1][0]
    if win is None:
        axc.axis("off")
        return _empty(fig, ax, f"trace {trace_id}: no kernels")
    k = store.con.execute(
        bind(
            "SELECT stream_id, start_ns, end_ns, coalesce(short_name, name) FROM kernels "
            "WHERE trace_id = ? AND device_id = ? AND end_ns > ? AND start_ns < ? ORDER BY start_ns",
            [trace_id, win.device_id, win.start_ns, win.end_ns],
        ),
    ).fetchall()
    m = store.con.execute(
        bind(
            "SELECT stream_id, start_ns, end_ns, op FROM memops WHERE trace_id = ? AND device_id = ? "
            "AND end_ns > ? "
            "AND start_ns < ?",
            [trace_id, win.device_id, win.start_ns, win.end_ns],
        ),
    ).fetchall()
    streams = sorted({r[0] for r in k} | {r[0] for r in m}, key=lambda s: (s is None, s))
    lane = {s: i for i, s in enumerate(streams)}
    names: dict[str, str] = {}
    top_names: dict[str, int] = {}
    for r in k:
        top_names[r[3]] = top_names.get(r[3], 0) + (r[2] - r[1])
    ranked = sorted(top_names, key=lambda n: -top_names[n])[: len(_PALETTE) - 1]
    for i, n in enumerate(ranked):
        names[n] = _PALETTE[i]
    origin = win.origin_ns
    by_colour: dict[str, list[tuple[float, float, int]]] = {}
    for stream, start, end, name in k:
        colour = names.get(name, _PALETTE[-1])
        by_colour.setdefault(colour, []).append(((start - origin) / 1e6, (end - start) / 1e6, lane[stream]))
    for colour, bars in by_colour.items():
        for li in sorted({b[2] for b in bars}):
            ax.broken_barh(
                [(b[0], max(b[1], 1e-6)) for b in bars if b[2] == li], (li - 0.4, 0.8), facecolors=colour
            )
    mem_bars = [((s - origin) / 1e6, (e - s) / 1e6, lane[st]) for st, s, e, _ in m]
    for li in sorted({b[2] for b in mem_bars}):
        ax.broken_barh(
            [(b[0], max(b[1], 1e-6)) for b in mem_bars if b[2] == li],
            (li - 0.4, 0.8),
            facecolors="#BBBBBB",
            edgecolors="#666666",
            linewidth=0.3,
        )
    ax.set_yticks(range(len(streams)), [f"stream {s}" for s in streams])
    ax.set_ylim(-0.6, len(streams) - 0.4)
    ax.invert_yaxis()
    ax.set_title(
        f"GPU timeline, trace {trace_id}, device {win.device_id}: {len(k)} kernels, {len(m)} memops in "
        f"{(win.start_ns - origin) / 1e6:.3f}–{(win.end_ns - origin) / 1e6:.3f} ms"
    )
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=_short(n, 40)) for n, c in names.items()]
    if mem_bars:
        handles.append(Patch(color="#BBBBBB", label="memcpy/memset"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if k:
        times, level = concurrency_steps([r[1] for r in k], [r[2] for r in k])
        t = (np.asarray(times) - origin) / 1e6
        axc.step(np.r_[t[0], t], np.r_[0, level], where="post", color="#4C72B0", linewidth=0.9)
        axc.fill_between(np.r_[t[0], t], np.r_[0, level], step="post", alpha=0.25, color="#4C72B0")
        axc.set_ylim(0, max(1, int(np.max(level))) + 0.5)
    axc.set_ylabel("kernels\nactive")
    axc.set_xlabel("time since the device's first kernel (ms)")
    axc.set_xlim((win.start_ns - origin) / 1e6, (win.end_ns - origin) / 1e6)
    return fig


@dataclass
class GapBins:
    """The gap histogram's numbers: log-spaced bins of gap length, with the gaps and the idle time in each.

    Attributes:
        edges_us: bin edges in microseconds (``len(counts) + 1``); each bin holds lengths in
            ``[edges[i], edges[i + 1])``, the last one its upper edge too (as ``numpy.histogram``).
        counts: gaps in each bin.
        time_ns: idle time in each bin (the sum of its gaps' lengths), in nanoseconds.
        gap_lengths_us: every gap's length (µs), for the percentiles.
    """

    edges_us: Any
    counts: Any
    time_ns: Any
    gap_lengths_us: Any

    @property
    def total_ns(self) -> float:
        """Idle time in all gaps."""
        return float(self.time_ns.sum())


def gap_histogram_bins(
    store: Store, trace_id: str, *, device_id: int | None = None, bins: int = 40
) -> GapBins:
    """Bin a trace's gaps (``gaps`` table, lengths > 0) by length: how many, and how much idle time, per bin.

    The bins are log-spaced between the shortest and the longest gap (10 linear bins when all are as long).
    """
    import numpy as np

    params: list[Any] = [trace_id]
    dev_sql = ""
    if device_id is not None:
        dev_sql, params = " AND device_id = ?", [trace_id, device_id]
    rows = store.con.execute(
        bind(f"SELECT duration_ns FROM gaps WHERE trace_id = ? AND duration_ns > 0{dev_sql}", params)
    ).fetchall()
    ns = np.asarray([r[0] for r in rows], dtype=float)
    d = ns / 1e3
    if d.size == 0:
        empty = np.zeros(0)
        return GapBins(np.zeros(1), empty, empty, empty)
    lo, hi = max(d.min(), 1e-3), d.max()
    edges = (
        np.logspace(np.log10(lo), np.log10(hi * 1.0001), bins + 1)
        if hi > lo
        else np.histogram_bin_edges(d, 10)
    )
    counts, _ = np.histogram(d, bins=edges)
    time_ns, _ = np.histogram(d, bins=edges, weights=ns)
    return GapBins(edges, counts, time_ns, d)


def gap_histogram_figure(store: Store, trace_id: str, *, device_id: int | None = None) -> Figure:
    """Idle gaps between busy periods (``gaps`` table) by length, log-spaced bins in microseconds.

    Two panels over the same bins: the idle time in each bin (time-weighted: the few long gaps that hold
    much of the idle time show), and the number of gaps in each (:func:`gap_histogram_bins`).
    """
    import numpy as np

    fig, axes = _figure(7, 5.2, rows=2, sharex=True)
    ax_time, ax_count = axes[0][0], axes[1][0]
    hist = gap_histogram_bins(store, trace_id, device_id=device_id)
    d = hist.gap_lengths_us
    if d.size == 0:
        fig.delaxes(ax_count)
        return _empty(fig, ax_time, f"trace {trace_id}: no gaps between kernels recorded")
    edges = hist.edges_us
    widths = np.diff(edges)
    style = {"align": "edge", "edgecolor": "white", "linewidth": 0.4}
    ax_time.bar(edges[:-1], hist.time_ns / 1e6, width=widths, color="#4C72B0", **style)
    ax_count.bar(edges[:-1], hist.counts, width=widths, color="#55A868", **style)
    if edges[-1] / edges[0] > 10:
        ax_count.set_xscale("log")
    p50, p99 = np.percentile(d, [50, 99])
    for ax in (ax_time, ax_count):
        for v, label, c in ((p50, "p50", "#333"), (p99, "p99", "#C44E52")):
            ax.axvline(v, color=c, linestyle="--", linewidth=1)
            ax.text(v, ax.get_ylim()[1] * 0.95, f" {label} {v:.3g} µs", color=c, fontsize=8, va="top")
    ax_time.set_ylabel("idle time (ms)")
    ax_count.set_ylabel("gaps")
    ax_count.set_xlabel("gap length (µs)")
    total = hist.total_ns
    long_share = float(d[d > 1e3].sum() * 1e3) / total if total else 0.0
    ax_time.set_title(
        f"Idle gaps between kernels: {d.size} gaps, {total / 1e6:.3g} ms in total "
        f"({long_share:.0%} of it in gaps > 1 ms)"
    )
    return fig


def kernel_breakdown_figure(store: Store, trace_id: str, *, top: int = 12) -> Figure:
    """Kernel time by kernel name (top ``top`` names, the rest as 'other'), with each name's share."""
    rows = store.con.execute(
        bind(
            "SELECT coalesce(short_name, name) AS label, sum(duration_ns) AS t, count(*) AS c FROM kernels "
            "WHERE trace_id = ? GROUP BY label ORDER BY t DESC",
            [trace_id],
        ),
    ).fetchall()
    fig, axes = _figure(8, 0.9 + 0.32 * min(len(rows), top + 1))
    ax = axes[0][0]
    if not rows:
        return _empty(fig, ax, f"trace {trace_id}: no kernels")
    total = sum(r[1] for r in rows) or 1
    shown = rows[:top]
    labels = [f"{_short(str(r[0]))} (×{r[2]})" for r in shown]
    values = [r[1] / 1e6 for r in shown]
    if len(rows) > top:
        rest = rows[top:]
        labels.append(f"other ({len(rest)} names, ×{sum(r[2] for r in rest)})")
        values.append(sum(r[1] for r in rest) / 1e6)
    y = list(range(len(values)))
    ax.barh(y, values, color="#4C72B0")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {100 * v * 1e6 / total:.1f}%", va="center", fontsize=8)
    ax.set_xlabel("total kernel time (ms)")
    ax.set_title(f"Kernel time breakdown: {sum(r[2] for r in rows)} kernels, {total / 1e6:.4g} ms")
    ax.margins(x=0.15)
    return fig


def sweep_figure(analysis: SweepAnalysis) -> Figure:
    """Draw degradation curves against N: throughput, efficiency, p95 latency multiplier, TTFT, with CIs."""
    fig, axes = _figure(11, 7, 2, 2)
    pts = [p for p in analysis.points]
    ns = [p.n for p in pts]

    def errbar(ax: Any, desc: list[Any], label: str, colour: str) -> None:
        xs, ys, lo, hi = [], [], [], []
        for n, d in zip(ns, desc):
            if d.mean is None:
                continue
            xs.append(n)
            ys.append(d.mean)
            lo.append(d.mean - d.ci_low if d.ci_low is not None else 0.0)
            hi.append(d.ci_high - d.mean if d.ci_high is not None else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label, color=colour)

    def marks(ax: Any) -> None:
        if analysis.boundary_n is not None:
            ax.axvline(
                analysis.boundary_n,
                color="#C44E52",
                linestyle="--",
                linewidth=1.2,
                label=f"breakdown N={analysis.boundary_n}",
            )
        if analysis.cliff_n is not None:
            ax.axvline(
                analysis.cliff_n,
                color="#DD8452",
                linestyle=":",
                linewidth=1.5,
                label=f"cliff N={analysis.cliff_n}",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("concurrency N")
        ax.grid(alpha=0.3)

    ax = axes[0][0]
    errbar(ax, [p.aggregate_tps for p in pts], "aggregate tok/s (per repetition)", "#4C72B0")
    errbar(ax, [p.per_agent_tps for p in pts], "per-agent tok/s (per request)", "#55A868")
    if analysis.peak_n is not None:
        ax.scatter(
            [analysis.peak_n],
            [analysis.peak_tps],
            s=120,
            facecolors="none",
            edgecolors="#8172B3",
            label=f"peak N={analysis.peak_n}",
            zorder=5,
        )
    ax.set_ylabel("tokens / s")
    ax.set_title("Throughput (95% CI)")
    marks(ax)
    ax.legend(fontsize=7)

    ax = axes[0][1]
    ax.plot(ns, [p.efficiency for p in pts], marker="o", color="#4C72B0", label="parallel efficiency")
    ax.axhline(
        analysis.efficiency_threshold,
        color="#999",
        linestyle="-.",
        linewidth=1,
        label=f"threshold {analysis.efficiency_threshold:g}",
    )
    if analysis.amdahl_serial_fraction is not None:
        import numpy as np

        from ..analysis.sweep_analysis import amdahl_speedup

        grid = np.geomspace(min(ns), max(ns), 50)
        rel = grid / analysis.baseline_n
        ax.plot(
            grid,
            amdahl_speedup(rel, analysis.amdahl_serial_fraction) / rel,
            color="#8172B3",
            linewidth=1,
            label=f"Amdahl s={analysis.amdahl_serial_fraction:.2f}",
        )
    ax.set_ylabel("efficiency")
    ax.set_ylim(bottom=0)
    ax.set_title("Parallel efficiency")
    marks(ax)
    ax.legend(fontsize=7)

    ax = axes[1][0]
    ax.plot(ns, [p.p95_multiplier for p in pts], marker="o", color="#C44E52", label="p95 latency / N0's")
    ax.axhline(
        analysis.latency_threshold,
        color="#999",
        linestyle="-.",
        linewidth=1,
        label=f"threshold ×{analysis.latency_threshold:g}",
    )
    ax.set_ylabel("p95 latency multiplier")
    ax.set_title("p95 request latency relative to N0")
    marks(ax)
    ax.legend(fontsize=7)

    ax = axes[1][1]
    errbar(ax, [p.ttft_ms for p in pts], "mean TTFT", "#DD8452")
    ax.plot(ns, [p.ttft_ms.p95 for p in pts], marker="x", linestyle="--", color="#937860", label="p95 TTFT")
    ax.set_ylabel("ms")
    ax.set_title("Time to first token (95% CI)")
    marks(ax)
    ax.legend(fontsize=7)
    fig.suptitle(f"Sweep {analysis.label}")
    return fig


#: Substrings picking the GPU metrics the report plots (``gpu_metrics.metric`` containing one of them).
KEY_GPU_METRICS = ("SMs Active", "DRAM Read", "DRAM Write", "Tensor Active")


def gpu_metric_series(
    store: Store,
    trace_id: str,
    *,
    device_id: int | None = None,
    max_points: int = 2000,
    patterns: tuple[str, ...] = KEY_GPU_METRICS,
) -> dict[tuple[int, str], tuple[Any, Any]]:
    """The key GPU metrics of a trace binned to at most ``max_points`` per series, in SQL.

    Returns ``{(device_id, metric): (bucket start ns, mean value)}``; each bucket is an integer division of
    ``ts_ns - min(ts_ns)`` by a width chosen so that the trace's time range makes ``max_points`` buckets.
    Empty when the trace has no such metric.
    """
    import numpy as np

    like = " OR ".join("metric LIKE ?" for _ in patterns)
    params: list[Any] = [trace_id, *(f"%{p}%" for p in patterns)]
    dev_sql = ""
    if device_id is not None:
        dev_sql = " AND device_id = ?"
        params.append(device_id)
    where = f"trace_id = ? AND ({like}){dev_sql}"
    rows = store.con.execute(
        bind(
            f"WITH s AS (SELECT device_id, metric, ts_ns, value FROM gpu_metrics WHERE {where}), "
            "r AS (SELECT min(ts_ns) AS lo, greatest((max(ts_ns) - min(ts_ns)) // ? + 1, 1) AS w FROM s) "
            "SELECT device_id, metric, r.lo + ((ts_ns - r.lo) // r.w) * r.w AS t, avg(value) AS v "
            "FROM s, r GROUP BY device_id, metric, t ORDER BY device_id, metric, t",
            [*params, max_points],
        )
    ).fetchall()
    out: dict[tuple[int, str], tuple[list[int], list[float]]] = {}
    for dev, metric, t, v in rows:
        ts, vs = out.setdefault((int(dev), str(metric)), ([], []))
        ts.append(int(t))
        vs.append(float(v))
    return {k: (np.asarray(t, dtype=np.int64), np.asarray(v)) for k, (t, v) in out.items()}


def gpu_metrics_figure(store: Store, trace_id: str, *, max_points: int = 2000) -> Figure | None:
    """Key GPU metrics over time (one line per metric and device), or None without such metrics.

    Time is in ms since the trace's first kernel (as the timeline's axis, on the same session clock).
    """
    series = gpu_metric_series(store, trace_id, max_points=max_points)
    if not series:
        return None
    row = store.con.execute(
        bind("SELECT min(start_ns) FROM kernels WHERE trace_id = ?", [trace_id])
    ).fetchone()
    origin = int(row[0]) if row and row[0] is not None else 0
    fig, axes = _figure(11, 2.8)
    ax = axes[0][0]
    devices = {d for d, _ in series}
    for i, ((dev, metric), (t, v)) in enumerate(sorted(series.items())):
        label = _short(metric, 44) + (f" (device {dev})" if len(devices) > 1 else "")
        ax.plot((t - origin) / 1e6, v, linewidth=0.8, color=_PALETTE[i % len(_PALETTE)], label=label)
    ax.set_xlabel("time since the trace's first kernel (ms)")
    ax.set_ylabel("value (as stored)")
    ax.set_title(f"GPU metrics, trace {trace_id} (binned to ≤ {max_points} points per series)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
