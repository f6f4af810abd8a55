"""``traceforge demo``: ingest the bundled real capture and show what traceforge computes."""

from __future__ import annotations

import lzma
import os
import tempfile
from importlib import resources

import click

BUNDLED = "small_matmul_h100_nsys2025.3.sqlite"


def bundled_trace(directory: str) -> str:
    """Decompress the bundled real nsys 2025.3 export (H100, 42 kernels on 2 streams) into ``directory``."""
    target = os.path.join(directory, BUNDLED)
    if not os.path.exists(target):
        data = resources.files("traceforge").joinpath("data").joinpath(BUNDLED + ".xz").read_bytes()
        with open(target + ".part", "wb") as fh:
            fh.write(lzma.decompress(data))
        os.replace(target + ".part", target)
    return target


@click.command()
@click.option(
    "--db",
    default=None,
    metavar="FILE",
    help="DuckDB store the capture is ingested into, created if absent (default: $TRACEFORGE_DB or "
    "./traceforge.duckdb, as every command).",
)
def demo(db: str | None) -> None:
    """Ingest the bundled real H100 capture into the store and print its metrics.

    The capture (small_matmul, 42 kernels on 2 streams) is decompressed into $XDG_CACHE_HOME/traceforge-demo
    (else the temporary directory) and ingested like any file: into your default store unless --db says
    otherwise, and skipped when it is stored already.
    """
    import polars as pl

    from ..api import connect

    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", tempfile.gettempdir()), "traceforge-demo")
    os.makedirs(cache, exist_ok=True)
    path = bundled_trace(cache)
    with connect(db) as tf:
        outcome = tf.ingest([path])[0]
        click.echo(f"{outcome.status} {path} as trace {outcome.trace_id} into {tf.path}\n")
        tid = outcome.trace_id
        with pl.Config(tbl_rows=20, tbl_cols=20, fmt_str_lengths=60, tbl_width_chars=160):
            metrics = tf.sql("SELECT * FROM device_metrics WHERE trace_id = ?", [tid]).to_dicts()
            for row in metrics:
                click.echo(f"device_metrics (device {row['device_id']}):")
                for key, value in row.items():
                    if key not in ("trace_id", "device_id"):
                        shown = f"{value:.4f}" if isinstance(value, float) else value
                        click.echo(f"  {key:24} {shown}")
            click.echo("\nkernel_summary (top 5 by GPU time):")
            click.echo(
                tf.sql(
                    "SELECT left(name, 60) AS name, count, total_ns, round(share, 3) AS share "
                    "FROM kernel_summary WHERE trace_id = ? ORDER BY total_ns DESC LIMIT 5",
                    [tid],
                )
            )
            graphs = tf.sql("SELECT * FROM graph_summary WHERE trace_id = ?", [tid])
            if not graphs.is_empty():
                click.echo("\ngraph_summary (CUDA graph executions):")
                click.echo(graphs.drop("trace_id", "metric_version"))
            click.echo("\nnvtx_projection:")
            click.echo(
                tf.sql(
                    "SELECT name, start_ns, end_ns, gpu_start_ns, gpu_end_ns, gpu_op_count, launch_count, "
                    "kernel_time_ns, graph_ns FROM nvtx_projection WHERE trace_id = ?",
                    [tid],
                )
            )
        store_path = tf.path
    click.echo(f'\nNext: traceforge sql "SELECT * FROM stream_metrics" --db {store_path}')
