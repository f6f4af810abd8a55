"""``traceforge compare | diff | report | plot | sweep``: statistics, diffs, figures and the HTML report.

Thin wrappers over :mod:`traceforge.analysis.compare`, :mod:`traceforge.analysis.diff`,
:mod:`traceforge.analysis.sweep_analysis` and :mod:`traceforge.report`; scipy and matplotlib are imported
only when a command needs them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..store import Store

_DB_HELP = "DuckDB store (default $TRACEFORGE_DB or ./traceforge.duckdb)."
_FORMATS = click.Choice(["table", "csv", "json"])


def _open(db: str | None) -> Store:
    from ..store import Store

    return Store(db, read_only=True)


#: The widest window: the nanosecond clock is a 64-bit integer, so its ms values stay below 2**63 / 1e6.
_WINDOW_LIMIT_MS = 9.2e12


def _parse_window(text: str | None) -> tuple[float, float] | None:
    import math

    from ..errors import QueryError

    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise QueryError(f"--window '{text}' is not START_MS:END_MS (e.g. 0:5)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise QueryError(f"--window '{text}': START_MS and END_MS must be finite numbers (e.g. 0:5)")
    if max(abs(lo), abs(hi)) > _WINDOW_LIMIT_MS:
        raise QueryError(
            f"--window '{text}': beyond the capture clock's range (at most {_WINDOW_LIMIT_MS:g} ms)"
        )
    if hi <= lo:
        raise QueryError(f"--window '{text}': the end must be after the start")
    return lo, hi


@click.command("compare")
@click.option("--db", default=None, metavar="FILE", help=_DB_HELP)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    required=True,
    metavar="TABLE.COLUMN",
    help="Numeric column to compare (repeatable; all comparisons form one corrected family).",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="FILTER",
    help='Group filter, e.g. "cells.n=8" or "cells.n=8,cells.backend=ollama" (repeatable; the first '
    "is the baseline).",
)
@click.option(
    "--by", default=None, metavar="TABLE.COLUMN", help="One group per distinct value of this column."
)
@click.option(
    "--baseline", default=None, metavar="VALUE", help="With --by: the baseline value (default smallest)."
)
@click.option(
    "--correction",
    type=click.Choice(["holm", "bh", "none"]),
    default="holm",
    show_default=True,
    help="Family-wise correction: Holm step-down, Benjamini-Hochberg FDR, or none.",
)
@click.option(
    "--alpha", type=float, default=0.05, show_default=True, help="Significance level of the verdicts."
)
@click.option(
    "--seed", type=int, default=20260226, show_default=True, help="Seed of the bootstrap intervals."
)
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True)
def compare(
    db: str | None,
    metrics: tuple[str, ...],
    groups: tuple[str, ...],
    by: str | None,
    baseline: str | None,
    correction: str,
    alpha: float,
    seed: int,
    fmt: str,
) -> None:
    """Compare groups of traces, cells or requests on metric columns (Welch, Cohen's d, Mann-Whitney)."""
    from ..analysis.compare import compare_groups, render

    with _open(db) as store:
        result = compare_groups(
            store,
            list(metrics),
            list(groups),
            by=by,
            baseline=baseline,
            correction=correction,
            alpha=alpha,
            seed=seed,
        )
    click.echo(render(result, fmt))


@click.command("diff")
@click.argument("trace_a")
@click.argument("trace_b")
@click.option("--db", default=None, metavar="FILE", help=_DB_HELP)
@click.option("--top", type=int, default=10, show_default=True, help="Top movers to list.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def diff(trace_a: str, trace_b: str, db: str | None, top: int, fmt: str) -> None:
    """Show two stored traces side by side (B against reference A): devices, kernels, memops, NVTX."""
    from ..analysis.diff import diff_traces, render

    with _open(db) as store:
        result = diff_traces(store, trace_a, trace_b, top=top)
    click.echo(render(result, fmt))


@click.command("report")
@click.option("--db", default=None, metavar="FILE", help=_DB_HELP)
@click.option(
    "--trace", "traces", multiple=True, metavar="ID", help="Trace to include (repeatable; default all)."
)
@click.option("--run", "runs", multiple=True, metavar="RUN_ID", help="Sweep run to include (repeatable).")
@click.option(
    "--window",
    default=None,
    metavar="START_MS:END_MS",
    help="Zoom window of each timeline, in ms from the capture start (as export --window); default: the "
    "densest 400 consecutive kernels. Above the whole capture's utilization either way.",
)
@click.option("--output", "-o", required=True, metavar="FILE.html", help="Where to write the report.")
@click.option(
    "--perfetto/--no-perfetto",
    default=False,
    show_default=True,
    help="Also write each trace's Perfetto timeline beside the report (FILE_perfetto/ID.pftrace) and link "
    "it (without it, the report shows the export command for each trace).",
)
def report(
    db: str | None,
    traces: tuple[str, ...],
    runs: tuple[str, ...],
    window: str | None,
    output: str,
    perfetto: bool,
) -> None:
    """Write one self-contained HTML report (inline SVG figures, no network needed).

    Each trace's section says how to see it in Perfetto (ui.perfetto.dev): with --perfetto its timeline is
    written beside the report and linked; without, the section gives the export command. The report itself
    stays one file of a few MB whatever the trace size; a timeline can be hundreds of MB.
    """
    from ..outputs import output_target
    from ..report import write_report

    window_ms = _parse_window(window)
    output_target(output)  # a directory, FIFO or device is refused before any work
    timelines: list[str] = []
    with _open(db) as store:
        path = write_report(
            store,
            output,
            trace_ids=list(traces),
            run_ids=list(runs),
            window_ms=window_ms,
            perfetto=perfetto,
            timelines=timelines,
        )
    click.echo(f"wrote {path}")
    if timelines:
        size = sum(os.path.getsize(f) for f in timelines)
        where = os.path.dirname(timelines[0])
        click.echo(
            f"wrote {len(timelines)} Perfetto timeline(s), {size / 1e6:.1f} MB, in {where} "
            "(open one at https://ui.perfetto.dev: Open trace file)"
        )


@click.command("plot")
@click.argument("kind", type=click.Choice(["timeline", "gaps", "kernels", "sweep"]))
@click.option("--db", default=None, metavar="FILE", help=_DB_HELP)
@click.option("--trace", default=None, metavar="ID", help="Trace (timeline, gaps, kernels).")
@click.option("--device", type=int, default=None, help="Device id (default: the one with the most kernels).")
@click.option(
    "--window",
    default=None,
    metavar="START_MS:END_MS",
    help="timeline: zoom window in ms from the capture start (as export --window); default: the densest "
    "400 consecutive kernels. Any size: above 2000 events the window is binned.",
)
@click.option("--run", default=None, metavar="RUN_ID", help="Sweep run (sweep; default: all runs).")
@click.option(
    "--sweep-index",
    type=int,
    default=0,
    show_default=True,
    help="Which (backend, model, workload) of the run, in sorted order (sweep).",
)
@click.option(
    "--output", "-o", required=True, metavar="FILE.png|svg", help="Output file; format from extension."
)
def plot(
    kind: str,
    db: str | None,
    trace: str | None,
    device: int | None,
    window: str | None,
    run: str | None,
    sweep_index: int,
    output: str,
) -> None:
    """Write one figure: timeline, gaps, kernels (of a trace) or sweep (degradation curves).

    timeline: the whole capture's utilization (busy % per time bin), then the zoom window: one lane per stream
    with a bar per kernel and memop, or, above 2000 of them, the time per kernel family per bin; and the mean
    number of kernels active per bin.

    gaps: the idle gaps by length (log bins), as the idle time in each bin (time-weighted, so the few long
    gaps holding most of the idle time show) above the number of gaps in each.

    Example: traceforge plot gaps --trace small_matmul.sqlite --output gaps.svg
    """
    from ..errors import QueryError

    lower = output.lower()
    if not (lower.endswith(".png") or lower.endswith(".svg")):
        raise QueryError(f"--output {output}: the file name must end in .png or .svg")
    window_ms = _parse_window(window)
    from ..outputs import output_target
    from ..report import plots

    output_target(output)  # a directory, FIFO or device is refused before any work
    with _open(db) as store:
        if kind == "sweep":
            from ..analysis.sweep_analysis import analyze_sweeps

            analyses = analyze_sweeps(store, run_ids=[run] if run else None)
            if not 0 <= sweep_index < len(analyses):
                raise QueryError(f"--sweep-index {sweep_index}: there are {len(analyses)} sweep(s)")
            fig = plots.sweep_figure(analyses[sweep_index])
        else:
            from ..analysis.diff import resolve_trace

            if trace is None:
                raise QueryError(f"plot {kind} needs --trace ID")
            tid = resolve_trace(store, trace)
            if kind == "timeline":
                fig = plots.timeline_figure(store, tid, device_id=device, window_ms=window_ms)
            elif kind == "gaps":
                fig = plots.gap_histogram_figure(store, tid, device_id=device)
            else:
                fig = plots.kernel_breakdown_figure(store, tid)
    plots.save(fig, output)
    click.echo(f"wrote {output}")


@click.command("sweep")
@click.option("--db", default=None, metavar="FILE", help=_DB_HELP)
@click.option(
    "--run", "runs", multiple=True, metavar="RUN_ID", help="Run to analyse (repeatable; default all)."
)
@click.option(
    "--efficiency-threshold",
    type=float,
    default=0.65,
    show_default=True,
    help="Breakdown when parallel efficiency falls below this.",
)
@click.option(
    "--latency-threshold",
    type=float,
    default=2.0,
    show_default=True,
    help="Breakdown when the p95 latency multiplier exceeds this.",
)
@click.option(
    "--cliff-ratio",
    type=float,
    default=0.5,
    show_default=True,
    help="Cliff when per-request speed falls below this fraction of N=1's.",
)
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True)
def sweep(
    db: str | None,
    runs: tuple[str, ...],
    efficiency_threshold: float,
    latency_threshold: float,
    cliff_ratio: float,
    fmt: str,
) -> None:
    """Analyse stored sweeps: throughput and efficiency against N, breakdown boundary, cliff, Amdahl fit."""
    from ..analysis.sweep_analysis import analyze_sweeps, render

    with _open(db) as store:
        analyses = analyze_sweeps(
            store,
            run_ids=list(runs) or None,
            efficiency_threshold=efficiency_threshold,
            latency_threshold=latency_threshold,
            cliff_ratio=cliff_ratio,
        )
    click.echo(render(analyses, fmt))
