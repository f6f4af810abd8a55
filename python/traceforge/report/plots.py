"""Single figures over the store: GPU timeline, gap histogram, kernel-time breakdown, sweep curves.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no GUI backend);
:func:`save` writes one as PNG or SVG and :func:`to_svg` returns the inline SVG text the HTML report embeds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..analysis.timebins import capture_origin
from ..analysis.timebins import concurrency_steps as concurrency_steps  # re-exported
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
    matplotlib.rcParams["agg.path.chunksize"] = 10000  # long paths drawn in chunks, never "cell block limit"
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
    origin_ns: int  # the capture start (as ``export --window``): axis zero
    capture_end_ns: int = 0


def choose_window(
    store: Store,
    trace_id: str,
    device_id: int | None = None,
    window_ms: tuple[float, float] | None = None,
    max_kernels: int = DEFAULT_WINDOW_KERNELS,
) -> Window | None:
    """Pick the zoom window: ``window_ms`` (ms from the capture start) or the densest stretch.

    The default is the densest run of ``max_kernels`` consecutive kernels on the device (the shortest time
    that holds that many). Returns None when the trace has no kernels on that device.
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
    origin, capture_end = capture_origin(store, trace_id)
    if window_ms is not None:
        lo, hi = window_ms
        if hi <= lo:
            raise QueryError(f"--window {lo}:{hi}: the end must be after the start")
        return Window(dev, origin + round(lo * 1e6), origin + round(hi * 1e6), origin, capture_end)
    import numpy as np

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
    return Window(dev, int(starts[i]), max(int(ends[i + k - 1]), int(starts[i]) + 1), origin, capture_end)


#: Above this many kernels and memops in the zoom window, the lanes are binned (time per kernel family per
#: bin) instead of one bar per event: the figure stays small and drawable whatever the trace size.
MAX_DRAWN_EVENTS = 2000
#: Bins of the binned views (about one per pixel column of the 11-inch figure at 120 dpi).
TIMELINE_BINS = 600


def timeline_figure(
    store: Store,
    trace_id: str,
    *,
    device_id: int | None = None,
    window_ms: tuple[float, float] | None = None,
    max_kernels: int = DEFAULT_WINDOW_KERNELS,
    max_drawn: int = MAX_DRAWN_EVENTS,
    bins: int = TIMELINE_BINS,
) -> Figure:
    """The GPU timeline of a device: the whole capture's utilization, then a zoom window.

    Three panels: the whole capture's utilization (busy % per time bin, the zoom window shaded); the zoom
    window's lanes, one per stream with a bar per kernel or memop (grey) when it holds at most ``max_drawn``
    of them, else the time per kernel family per bin (as mean kernels active); and the zoom window's mean
    concurrency per bin (active kernel time / bin width), which reads 0.14 where kernels fill 14% of a bin,
    never a solid band. Every series has at most ``bins`` points, so the figure's size does not grow with
    the trace.
    """
    import numpy as np

    from ..analysis import timebins

    win = choose_window(store, trace_id, device_id, window_ms, max_kernels)
    fig, axes = _figure(11, 6.4, 3, 1, gridspec_kw={"height_ratios": [1.1, 3, 1]})
    axo, ax, axc = axes[0][0], axes[1][0], axes[2][0]
    if win is None:
        axo.axis("off")
        axc.axis("off")
        return _empty(fig, ax, f"trace {trace_id}: no kernels")
    origin = win.origin_ns
    ms = 1e6

    # 1. the whole capture
    cap_lo, cap_hi = origin, max(win.capture_end_ns, origin + 1)
    everything = timebins.activities(store, trace_id, win.device_id, cap_lo, cap_hi)
    edges = timebins.bin_edges(cap_lo, cap_hi, bins)
    busy = timebins.busy_per_bin(everything, edges)
    frac = busy / np.diff(edges)
    x = (edges - origin) / ms
    axo.fill_between(x, np.r_[frac, frac[-1]] * 100, step="post", color="#4C72B0", alpha=0.6, linewidth=0)
    axo.axvspan((win.start_ns - origin) / ms, (win.end_ns - origin) / ms, color="#DD8452", alpha=0.35)
    axo.set_xlim(x[0], x[-1])
    axo.set_ylim(0, 100)
    axo.set_ylabel("busy %")
    total_busy = int(busy.sum())
    axo.set_title(
        f"Device {win.device_id}, whole capture ({(cap_hi - cap_lo) / ms:,.0f} ms): GPU busy "
        f"{100 * total_busy / (cap_hi - cap_lo):.1f}% of the time; zoom window shaded",
        fontsize=9,
    )

    # 2. the zoom window's lanes
    k_count, m_count = (
        int(v)
        for v in store.con.execute(
            bind(
                "SELECT (SELECT count(*) FROM kernels WHERE trace_id = ? AND device_id = ? AND end_ns > ? "
                "AND start_ns < ?), (SELECT count(*) FROM memops WHERE trace_id = ? AND device_id = ? "
                "AND end_ns > ? AND start_ns < ?)",
                [trace_id, win.device_id, win.start_ns, win.end_ns] * 2,
            )
        ).fetchone()
        or (0, 0)
    )
    lo_ms, hi_ms = (win.start_ns - origin) / ms, (win.end_ns - origin) / ms
    zoom = timebins.activities(store, trace_id, win.device_id, win.start_ns, win.end_ns)
    zedges = timebins.bin_edges(win.start_ns, win.end_ns, bins)
    if k_count + m_count <= max_drawn:
        _draw_lanes(store, trace_id, win, ax)
        mode = f"{k_count:,} kernels, {m_count:,} memops"
    else:
        _draw_families(store, trace_id, win, ax, zedges)
        mode = f"{k_count:,} kernels, {m_count:,} memops (binned: time per kernel family)"
    ax.set_xlim(lo_ms, hi_ms)
    ax.set_title(f"GPU timeline, trace {trace_id}, zoom {lo_ms:.3f}–{hi_ms:.3f} ms: {mode}", fontsize=9)

    # 3. mean concurrency per bin in the zoom window
    active = timebins.active_per_bin(zoom, zedges) / np.diff(zedges)
    zbusy = timebins.busy_per_bin(zoom, zedges)
    zx = (zedges - origin) / ms
    axc.fill_between(zx, np.r_[active, active[-1]], step="post", alpha=0.35, color="#4C72B0", linewidth=0)
    axc.step(zx, np.r_[active, active[-1]], where="post", color="#4C72B0", linewidth=0.8)
    axc.set_ylim(0, max(1.0, float(active.max()) * 1.15))
    axc.set_xlim(lo_ms, hi_ms)
    axc.set_ylabel("kernels\nactive (mean)")
    span = max(1, win.end_ns - win.start_ns)
    axc.set_title(
        f"mean concurrency per bin; GPU busy {100 * int(zbusy.sum()) / span:.1f}% of the zoom window",
        fontsize=8,
        loc="left",
    )
    axc.set_xlabel("time since the capture start (ms)")
    for a in (axo, ax, axc):
        a.ticklabel_format(axis="x", useOffset=False, style="plain")
    return fig


def _family_colours(names: list[str]) -> dict[str, str]:
    return {n: _PALETTE[i] for i, n in enumerate(names[: len(_PALETTE) - 1])}


def _draw_lanes(store: Store, trace_id: str, win: Window, ax: Any) -> None:
    """One lane per stream, one bar per kernel (coloured by family) and memop (grey)."""
    origin = win.origin_ns
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
            "AND end_ns > ? AND start_ns < ?",
            [trace_id, win.device_id, win.start_ns, win.end_ns],
        ),
    ).fetchall()
    streams = sorted({r[0] for r in k} | {r[0] for r in m}, key=lambda s: (s is None, s))
    lane = {s: i for i, s in enumerate(streams)}
    totals: dict[str, int] = {}
    for r in k:
        totals[r[3]] = totals.get(r[3], 0) + (r[2] - r[1])
    names = _family_colours(sorted(totals, key=lambda n: -totals[n]))
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
    ax.set_ylim(-0.6, max(len(streams), 1) - 0.4)
    ax.invert_yaxis()
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=_short(n, 40)) for n, c in names.items()]
    if mem_bars:
        handles.append(Patch(color="#BBBBBB", label="memcpy/memset"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _draw_families(store: Store, trace_id: str, win: Window, ax: Any, edges: Any) -> None:
    """Time per kernel family (base name) per bin, stacked, as mean kernels active; the rest as 'other'."""
    import numpy as np

    from ..analysis import timebins

    top = len(_PALETTE) - 1
    arrays = store.con.execute(
        bind(
            "WITH k AS (SELECT coalesce(short_name, name) AS family, start_ns, end_ns FROM kernels "
            "WHERE trace_id = ? AND device_id = ? AND end_ns > ? AND start_ns < ?), "
            "r AS (SELECT family, row_number() OVER (ORDER BY sum(end_ns - start_ns) DESC, family) AS rank "
            "FROM k GROUP BY family) "
            "SELECT least(r.rank, ?) - 1 AS rank, k.start_ns, k.end_ns FROM k JOIN r USING (family) "
            "ORDER BY k.start_ns",
            [trace_id, win.device_id, win.start_ns, win.end_ns, top + 1],
        )
    ).fetchnumpy()
    names = [
        str(r[0])
        for r in store.con.execute(
            bind(
                "SELECT coalesce(short_name, name) AS family FROM kernels "
                "WHERE trace_id = ? AND device_id = ? AND end_ns > ? AND start_ns < ? GROUP BY family "
                "ORDER BY sum(end_ns - start_ns) DESC, family LIMIT ?",
                [trace_id, win.device_id, win.start_ns, win.end_ns, top],
            )
        ).fetchall()
    ]
    rank = np.asarray(arrays["rank"], dtype=np.int64)
    starts = np.asarray(arrays["start_ns"], dtype=np.int64)
    ends = np.asarray(arrays["end_ns"], dtype=np.int64)
    widths = np.diff(edges)
    x = (edges - win.origin_ns) / 1e6
    base = np.zeros(widths.size)
    labels = [*names, "other"] if rank.size and rank.max() >= len(names) else names
    for i, label in enumerate(labels):
        sel = rank == i
        share = timebins.active_per_bin(timebins.Activities(starts[sel], ends[sel]), edges) / widths
        colour = _PALETTE[i] if i < len(names) else _PALETTE[-1]
        ax.fill_between(
            x,
            np.r_[base, base[-1]],
            np.r_[base + share, (base + share)[-1]],
            step="post",
            color=colour,
            linewidth=0,
            label=_short(label, 40),
        )
        base = base + share
    ax.set_ylim(0, max(1.0, float(base.max()) * 1.1))
    ax.set_ylabel("kernels active (mean),\nby kernel family")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


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
    """Kernel time by kernel name (top ``top`` names, the rest as 'other'), with each name's share.

    Grouped by the full (demangled) name, as the report's kernel table beside it and ``kernel_summary``
    are: grouping by the base name merged different instantiations of one template into one bar, which
    then matched no row of the table. Labels are cut to fit; cut labels that would read the same are told
    apart by the rank of their row in the table (``#2``).
    """
    rows = store.con.execute(
        bind(
            "SELECT name AS label, sum(duration_ns) AS t, count(*) AS c FROM kernels "
            "WHERE trace_id = ? GROUP BY name ORDER BY t DESC, name",
            [trace_id],
        ),
    ).fetchall()
    fig, axes = _figure(8, 0.9 + 0.32 * min(len(rows), top + 1))
    ax = axes[0][0]
    if not rows:
        return _empty(fig, ax, f"trace {trace_id}: no kernels")
    total = sum(r[1] for r in rows) or 1
    shown = rows[:top]
    cut = [_short(str(r[0])) for r in shown]
    labels = [
        f"{c} (×{r[2]})" if cut.count(c) == 1 else f"{c} #{i + 1} (×{r[2]})"
        for i, (c, r) in enumerate(zip(cut, shown))
    ]
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

    Time is in ms since the capture start (as the timeline's axis and ``export --window``).
    """
    series = gpu_metric_series(store, trace_id, max_points=max_points)
    if not series:
        return None
    origin, _ = capture_origin(store, trace_id)
    fig, axes = _figure(11, 2.8)
    ax = axes[0][0]
    devices = {d for d, _ in series}
    for i, ((dev, metric), (t, v)) in enumerate(sorted(series.items())):
        label = _short(metric, 44) + (f" (device {dev})" if len(devices) > 1 else "")
        ax.plot((t - origin) / 1e6, v, linewidth=0.8, color=_PALETTE[i % len(_PALETTE)], label=label)
    ax.set_xlabel("time since the capture start (ms)")
    ax.set_ylabel("value (as stored)")
    ax.set_title(f"GPU metrics, trace {trace_id} (binned to ≤ {max_points} points per series)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
