"""Synthetic nsys exports of any size, for demos, tests and scale benchmarks.

:func:`synthesize` writes a SQLite file with exactly the tables, columns, types and column order of an
nsys 2025.3.2 export (schema 3.20.3), filled with a simulated PyTorch LLM decode loop whose kernel names,
durations, gaps, launch latencies, memcpy sizes and synchronisations follow distributions fitted to a real
H100 capture (``llama1b_n1``; see ``scripts/fit_synth.py``). The same arguments give the same file.
``nsys_version="2022.4"`` writes the same simulated events in the nsys 2022.4.2 layout instead (schema
3.0.0, ``EXPORT_META_DATA``, copied from the real ``cu11_driverapi_h200_nsys2022.4`` export; every kernel
launched through the driver API ``cuLaunchKernel``). Generation runs in the Rust core without the GIL and
stops on Ctrl-C, leaving no partial file.

Example::

    from traceforge.synth import synthesize
    path = synthesize("demo.sqlite", kernels=100_000, devices=2, streams=2, seed=1)
    old = synthesize("old.sqlite", kernels=10_000, nsys_version="2022.4")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .errors import (
    SynthArgumentError,
    SynthExistsError,
    SynthInterrupted,
    SynthModelError,
    SynthOutputError,
    TraceforgeError,
)

__all__ = [
    "SynthArgumentError",
    "SynthExistsError",
    "SynthInterrupted",
    "SynthModelError",
    "SynthOutputError",
    "TraceforgeError",
    "synthesize",
    "synthesize_with_summary",
]

#: Upper bounds enforced by the generator.
MAX_KERNELS = 1 << 34
MAX_DEVICES = 64
MAX_STREAMS = 256
MAX_GIL_THREADS = 1024
MAX_GPU_METRICS_HZ = 200_000
MAX_HOST_ROWS = 1 << 40
#: The nsys export layouts the generator writes (the first is the default).
NSYS_VERSIONS = ("2025.3", "2022.4")


def _check_int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SynthArgumentError(f"invalid {field}: {value!r} is not an integer")
    if not low <= value <= high:
        raise SynthArgumentError(f"invalid {field}: {value} is not in {low}..={high}")
    return value


def synthesize_with_summary(
    out: str | os.PathLike[str],
    *,
    kernels: int = 10_000,
    devices: int = 1,
    streams: int = 1,
    seed: int = 0,
    requests: Optional[int] = None,
    overwrite: bool = False,
    nsys_version: str = "2025.3",
    nvtx_ranges: int = 0,
    gil_threads: int = 0,
    gpu_metrics_hz: int = 0,
    osrt_calls: int = 0,
) -> tuple[Path, dict[str, int]]:
    """Like :func:`synthesize`, also returning the row counts written.

    Returns:
        The output path and a dict with ``kernels``, ``memcpys``, ``memsets``, ``syncs``, ``api_calls``,
        ``nvtx_ranges``, ``gil_ranges``, ``osrt_calls``, ``gpu_metric_samples``, ``start_ns`` and
        ``stop_ns``.
    """
    from ._core import synthesize as _synthesize

    _check_int("devices", devices, 1, MAX_DEVICES)
    _check_int("kernels", kernels, devices, MAX_KERNELS)
    _check_int("streams", streams, 1, MAX_STREAMS)
    _check_int("seed", seed, 0, (1 << 64) - 1)
    if requests is not None:
        _check_int("requests", requests, 1, kernels // devices)
    if nsys_version not in NSYS_VERSIONS:
        raise SynthArgumentError(
            f"invalid nsys_version: {nsys_version!r} is not one of {', '.join(NSYS_VERSIONS)}"
        )
    _check_int("nvtx_ranges", nvtx_ranges, 0, MAX_HOST_ROWS)
    _check_int("gil_threads", gil_threads, 0, MAX_GIL_THREADS)
    _check_int("gpu_metrics_hz", gpu_metrics_hz, 0, MAX_GPU_METRICS_HZ)
    _check_int("osrt_calls", osrt_calls, 0, MAX_HOST_ROWS)
    path = Path(out)
    summary = _synthesize(
        path,
        kernels,
        devices,
        streams,
        seed,
        requests,
        overwrite,
        nsys_version,
        nvtx_ranges=nvtx_ranges,
        gil_threads=gil_threads,
        gpu_metrics_hz=gpu_metrics_hz,
        osrt_calls=osrt_calls,
    )
    return path, dict(summary)


def synthesize(
    out: str | os.PathLike[str],
    *,
    kernels: int = 10_000,
    devices: int = 1,
    streams: int = 1,
    seed: int = 0,
    requests: Optional[int] = None,
    overwrite: bool = False,
    nsys_version: str = "2025.3",
    nvtx_ranges: int = 0,
    gil_threads: int = 0,
    gpu_metrics_hz: int = 0,
    osrt_calls: int = 0,
) -> Path:
    """Write a synthetic nsys 2025.3 (or 2022.4) SQLite export.

    Args:
        out: Path of the ``.sqlite`` file to write; it appears only once complete.
        kernels: Total kernels over all devices (at least one per device).
        devices: GPUs, each driven by its own process with one launching thread.
        streams: CUDA streams per device that work is spread over (overlap emerges from the timing).
        seed: Seed; the same arguments and seed give a byte-identical file.
        requests: NVTX request ranges per device (default: one per ~45,800 kernels, as in the fitted capture).
        overwrite: Replace ``out`` if it exists.
        nsys_version: ``"2025.3"`` (schema 3.20.3) or ``"2022.4"`` (schema 3.0.0, driver-API launches): the
            export layout, copied from a real export of that version.
        nvtx_ranges: NVTX push/pop ranges besides the request ranges: the user's ranges, nested two deep on
            the launching threads; with ``gil_threads``, the ``Holding GIL`` / ``Waiting for GIL`` ranges of
            ``nsys -t python-gil`` (``GIL Trace`` domain) spread over those threads.
        gil_threads: Python threads of the first process with GIL tracing (their OS calls too).
        gpu_metrics_hz: Samples per second of each of an H200's 22 GPU metrics, per device (``GPU_METRICS``).
        osrt_calls: OS runtime calls (``OSRT_API``) over the GIL threads (else the launching threads).
            The host tables (2025.3 layout only) are copied from the real GIL/OSRT and GPU-metric captures.

    Returns:
        The path written.

    Raises:
        SynthArgumentError: A parameter is out of range.
        SynthExistsError: ``out`` exists and ``overwrite`` is false.
        SynthOutputError: ``out`` cannot be written (missing directory, permissions, full disk).
    """
    path, _ = synthesize_with_summary(
        out,
        kernels=kernels,
        devices=devices,
        streams=streams,
        seed=seed,
        requests=requests,
        overwrite=overwrite,
        nsys_version=nsys_version,
        nvtx_ranges=nvtx_ranges,
        gil_threads=gil_threads,
        gpu_metrics_hz=gpu_metrics_hz,
        osrt_calls=osrt_calls,
    )
    return path
