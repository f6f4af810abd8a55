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
@click.option("--force-overwrite", "-f", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
def synth(
    out: Path,
    kernels: int,
    devices: int,
    streams: int,
    seed: int,
    requests: Optional[int],
    force_overwrite: bool,
    quiet: bool,
) -> None:
    """Write a synthetic nsys 2025.3 export (real schema, timing fitted to a real H100 LLM capture)."""
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
    )
    if not quiet:
        size = path.stat().st_size
        click.echo(
            f"{path}: {summary['kernels']:,} kernels, {summary['memcpys']:,} memcpy, "
            f"{summary['memsets']:,} memset, "
            f"{summary['api_calls']:,} API calls, {summary['nvtx_ranges']:,} NVTX ranges; "
            f"{size / 1e6:,.1f} MB in {time.perf_counter() - t0:.1f} s"
        )
