"""``traceforge synth``: write a synthetic nsys export of any size."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click


@click.command("synth")
@click.option(
    "--out", "-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite export to write.",
)  # fmt: skip
@click.option(
    "--kernels", "-n", default=10_000, show_default=True, type=int, help="Total kernels (all devices)."
)
@click.option("--devices", "-d", default=1, show_default=True, type=int, help="GPUs (one process each).")
@click.option("--streams", "-s", default=1, show_default=True, type=int, help="CUDA streams per device.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed; same arguments, same file.")
@click.option(
    "--requests", default=None, type=int, help="NVTX ranges per device [default: 1 per ~45.8k kernels]."
)
@click.option(
    "--nsys-version",
    type=click.Choice(["2025.3", "2022.4"]),
    default="2025.3",
    show_default=True,
    help="Export layout to imitate, copied from a real export of that nsys version; 2022.4 (schema 3.0.0, "
    "EXPORT_META_DATA) launches every kernel with the driver API cuLaunchKernel. "
    "Example: traceforge synth --out old.sqlite --kernels 100000 --nsys-version 2022.4",
)
@click.option(
    "--nvtx-ranges",
    default=0,
    show_default=True,
    type=int,
    help="NVTX push/pop ranges besides the request ranges: the user's (nested, on the launching threads), "
    "or with --gil-threads the GIL ranges of nsys -t python-gil.",
)
@click.option(
    "--gil-threads", default=0, show_default=True, type=int, help="Python threads with GIL tracing."
)
@click.option(
    "--gpu-metrics-hz",
    default=0,
    show_default=True,
    type=int,
    help="GPU metric samples per second (22 metrics per device, GPU_METRICS).",
)
@click.option("--osrt-calls", default=0, show_default=True, type=int, help="OS runtime calls (OSRT_API).")
@click.option("--force-overwrite", "-f", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
def synth(
    out: Path,
    kernels: int,
    devices: int,
    streams: int,
    seed: int,
    requests: Optional[int],
    nsys_version: str,
    nvtx_ranges: int,
    gil_threads: int,
    gpu_metrics_hz: int,
    osrt_calls: int,
    force_overwrite: bool,
    quiet: bool,
) -> None:
    """Write a synthetic nsys 2025.3 or 2022.4 export (real schema, timing fitted to a real LLM capture)."""
    from ..synth import synthesize_with_summary

    t0 = time.perf_counter()
    path, summary = synthesize_with_summary(
        out,
        kernels=kernels,
        devices=devices,
        streams=streams,
        seed=seed,
        requests=requests,
        overwrite=force_overwrite,
        nsys_version=nsys_version,
        nvtx_ranges=nvtx_ranges,
        gil_threads=gil_threads,
        gpu_metrics_hz=gpu_metrics_hz,
        osrt_calls=osrt_calls,
    )
    if not quiet:
        size = path.stat().st_size
        click.echo(
            f"{path}: {summary['kernels']:,} kernels, {summary['memcpys']:,} memcpy, "
            f"{summary['memsets']:,} memset, "
            f"{summary['api_calls']:,} API calls, {summary['nvtx_ranges']:,} NVTX ranges"
            + (f", {summary['gil_ranges']:,} GIL ranges" if summary["gil_ranges"] else "")
            + (f", {summary['osrt_calls']:,} OS calls" if summary["osrt_calls"] else "")
            + (
                f", {summary['gpu_metric_samples']:,} GPU metric samples"
                if summary["gpu_metric_samples"]
                else ""
            )
            + "; "
            f"{size / 1e6:,.1f} MB in {time.perf_counter() - t0:.1f} s"
        )
