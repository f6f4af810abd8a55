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
    )
    if not quiet:
        size = path.stat().st_size
        click.echo(
            f"{path}: {summary['kernels']:,} kernels, {summary['memcpys']:,} memcpy, "
            f"{summary['memsets']:,} memset, "
            f"{summary['api_calls']:,} API calls, {summary['nvtx_ranges']:,} NVTX ranges; "
            f"{size / 1e6:,.1f} MB in {time.perf_counter() - t0:.1f} s"
        )
