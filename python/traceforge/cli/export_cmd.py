"""``traceforge export``: the Parquet dataset of the store, or one trace as a Perfetto / Chrome JSON timeline.

``--format parquet`` is the dataset export of :mod:`traceforge.cli.batch_cmd`, unchanged; the timeline
formats go through :func:`traceforge.timeline_export.export_timeline`.
"""

from __future__ import annotations

import os

import click

_DB_HELP = "DuckDB store (default $TRACEFORGE_DB or ./traceforge.duckdb)."


@click.command("export")
@click.option("--db", "db", default=None, metavar="FILE", help=_DB_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "perfetto", "chrome-json"]),
    default="parquet",
    show_default=True,
    help="parquet: the store as a dataset; perfetto: one trace as a Perfetto protobuf timeline "
    "(any size); chrome-json: the same as Chrome trace-event JSON (small windows).",
)
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    metavar="PATH",
    help="parquet: dataset directory (DIR/<table>/trace_id=<id>/data.parquet); perfetto, chrome-json: "
    "the file to write (e.g. run.pftrace, run.json).",
)
@click.option(
    "--trace",
    "trace_ids",
    multiple=True,
    metavar="ID",
    help="Trace to export: id, file name or path, or a unique prefix (parquet: repeatable, default all; "
    "perfetto, chrome-json: exactly one, optional when the store holds one trace).",
)
@click.option(
    "--window",
    default=None,
    metavar="START_MS:END_MS",
    help="perfetto, chrome-json: only the events overlapping this window, in ms from the capture start "
    "(default: the whole capture).",
)
@click.option(
    "--force-overwrite",
    "overwrite",
    is_flag=True,
    help="parquet: rewrite partitions already in DIR (default: keep them). Timeline files are always "
    "replaced.",
)
@click.pass_context
def export(
    ctx: click.Context,
    db: str | None,
    fmt: str,
    output: str,
    trace_ids: tuple[str, ...],
    window: str | None,
    overwrite: bool,
) -> None:
    """Export stored traces: a hive-partitioned Parquet dataset, or one trace as a timeline file.

    A Perfetto timeline has a track per GPU stream (kernels, memcpy/memset, CUDA graph executions), a track
    per CPU thread (CUDA API calls; NVTX, GIL and OS runtime calls under it when captured), a flow arrow
    from each launch to its GPU work, and counters per GPU (kernel concurrency, utilization, GPU metrics).
    Open it at https://ui.perfetto.dev ("Open trace file"); it never leaves your machine.

    \b
    Examples:
      traceforge export --format perfetto --trace llama1b --output llama.pftrace
      traceforge export --format chrome-json --trace 7a1f --window 11000:11100 -o zoom.json
      traceforge export --format parquet --output dataset/
    """  # noqa: D301 (click's \b keeps the examples' lines as written)
    from ..errors import QueryError

    if fmt == "parquet":
        if window is not None:
            raise QueryError("--window applies to --format perfetto and chrome-json, not parquet")
        from .batch_cmd import export as parquet_export

        ctx.invoke(parquet_export, db=db, fmt=fmt, output=output, trace_ids=trace_ids, overwrite=overwrite)
        return
    from ..analysis.diff import resolve_trace
    from ..store import Store
    from ..timeline_export import export_timeline
    from .stats_cmd import _parse_window

    window_ms = _parse_window(window)
    if len(trace_ids) > 1:
        raise QueryError(f"--format {fmt} writes one trace per file: give one --trace (got {len(trace_ids)})")
    with Store(db, read_only=True) as store:
        if trace_ids:
            trace_id = resolve_trace(store, trace_ids[0])
        else:
            stored = store.con.execute("SELECT trace_id FROM traces ORDER BY trace_id").fetchall()
            if len(stored) != 1:
                raise QueryError(
                    f"--format {fmt} needs --trace ID: the store holds {len(stored)} traces "
                    "(see `traceforge traces`)"
                )
            trace_id = str(stored[0][0])
        result = export_timeline(store, trace_id, output, fmt=fmt, window_ms=window_ms)
    s = result.stats
    span_ms = (result.end_ns - result.start_ns) / 1e6
    start_ms = (result.start_ns - result.origin_ns) / 1e6
    click.echo(
        f"wrote {result.path} ({s.get('bytes', 0) / 1e6:.1f} MB, {fmt}): trace {trace_id}, "
        f"{start_ms:.3f}-{start_ms + span_ms:.3f} ms from the capture start; {s.get('slices', 0):,} slices "
        f"on {s.get('tracks', 0):,} tracks, {s.get('flow_starts', 0):,} launch flows, "
        f"{s.get('counters', 0):,} counter samples"
    )
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"open it at https://ui.perfetto.dev (Open trace file: {os.path.basename(result.path)})")
