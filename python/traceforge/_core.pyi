"""Type stubs of the native extension ``traceforge._core`` (private: use the ``traceforge`` API).

Checked against the built module with ``python -m mypy.stubtest traceforge._core``.
"""

import os
from collections.abc import Iterator
from typing import Any, final

__all__ = [
    "build_info",
    "error_codes",
    "check_export",
    "fingerprint",
    "open_trace",
    "write_order",
    "TraceHandle",
    "TableIterator",
    "CancelToken",
    "ArrowStream",
    "rederive",
    "synthesize",
    "TimelineWriter",
    "SYNTH_SCHEMA_2025_3",
]

SYNTH_SCHEMA_2025_3: str
"""CREATE TABLE statements of an nsys 2025.3.2 SQLite export, as the synthetic exports use them."""

@final
class ArrowStream:
    """A single-use Arrow C stream (``__arrow_c_stream__``) of record batches."""

    def __arrow_c_schema__(self) -> object:
        """The stream's schema as an ``arrow_schema`` PyCapsule."""
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """The stream as an ``arrow_array_stream`` PyCapsule; it can be taken once."""

@final
class TableIterator(Iterator[tuple[str, ArrowStream]]):
    """A trace's stored tables in write order, as ``(name, stream)`` pairs (``TraceHandle.tables``)."""

    def __iter__(self) -> TableIterator: ...
    def __next__(self) -> tuple[str, ArrowStream]: ...

@final
class TraceHandle:
    """An export being ingested."""

    def info(self) -> dict[str, Any]:
        """Metadata for the ``traces`` row and the capabilities probe (counts complete after ``tables``)."""
    def tables(self) -> TableIterator:
        """Every stored table of the trace, in the order it must be written, as ``(name, stream)`` pairs.

        The first pair is ``api_call_rows`` (streaming it matches API calls to the GPU operations they
        launched); the metrics are derived when the next pair is asked for; then come ``devices``,
        ``processes``, ``threads``, ``gap_rows``, ``kernel_rows``, ``kernel_classes``,
        ``api_call_classes``, ``memops``, ``graph_launches``, ``sync_events``, ``nvtx_ranges``,
        ``device_metrics``, ``stream_metrics``, ``concurrency_levels``, ``kernel_summary``,
        ``memop_summary``, ``graph_summary`` and ``nvtx_projection``. Consume each stream before asking
        for the next pair: each dictionary (``kernel_classes``, ``api_call_classes``) is complete only once
        the stream that builds it was read.
        A core error ends the iteration with the matching ``traceforge.errors`` exception.
        """
    def cancel(self) -> None:
        """Ask running scans and streams to stop (Ctrl-C); they fail with ``IngestInterrupted``."""
    def raise_stream_error(self) -> None:
        """Raise the first error one of this trace's streams failed with; return None if none did.

        The ``traceforge.errors`` class of its code, with its path and whole reason: what DuckDB reports
        wrapped in its own words.
        """

@final
class CancelToken:
    """A flag that stops an ``open_trace`` running on another thread, and the streams of its trace."""

    def __new__(cls) -> CancelToken: ...
    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called."""
    def cancel(self) -> None:
        """Ask the work watching this token to stop; it then fails with ``IngestInterrupted``."""

def build_info() -> dict[str, str]:
    """Versions of the native build: ``core_version`` and the bundled ``sqlite_version``."""

def error_codes() -> list[str]:
    """Every error code the core can raise; ``traceforge.errors.class_for_code`` maps each to its class."""

def write_order() -> list[str]:
    """Names of the tables ``TraceHandle.tables()`` yields, in write order."""

def fingerprint(path: str | os.PathLike[str], cancel: CancelToken | None = None) -> str:
    """xxh3-128 of a regular file's bytes as 32 hex digits.

    Only the bytes the file had when opened are read; ``cancel`` stops it (then ``IngestInterrupted``).
    """

def check_export(path: str | os.PathLike[str]) -> None:
    """Refuse, from its first 100 bytes, a path that is not a whole SQLite database in a regular file.

    Raises ``NotAnExportError`` or ``CorruptExportError`` (also for a pending write-ahead log).
    """

def open_trace(
    path: str | os.PathLike[str], threads: int = 0, cancel: CancelToken | None = None
) -> TraceHandle:
    """Open an nsys SQLite export and read its GPU operations (``threads`` = 0: all cores)."""

def rederive(
    kernels: object,
    memops: object,
    nvtx_ranges: object,
    graph_launches: object | None = None,
    host_states: object | None = None,
    gpu_metrics: object | None = None,
) -> dict[str, ArrowStream]:
    """Recompute the derived tables of one trace from its stored rows (Arrow streams in, streams out).

    ``graph_launches``: the stored graph launches (their graph-mode rows are GPU activities).
    ``host_states``: the thread states idle gaps are attributed from: rows of ``pid, tid, state, start_ns,
    end_ns``, ``state`` 0 sync, 1 gil_wait, 2 os, 3 cuda_api.
    ``gpu_metrics``: the stored GPU metric samples (``device_id, metric, ts_ns, value``).
    """

def synthesize(
    out: str | os.PathLike[str],
    kernels: int,
    devices: int,
    streams: int,
    seed: int,
    requests: int | None = None,
    overwrite: bool = False,
    nsys_version: str = "2025.3",
    nvtx_ranges: int = 0,
    gil_threads: int = 0,
    gpu_metrics_hz: int = 0,
    osrt_calls: int = 0,
) -> dict[str, Any]:
    """Write a synthetic nsys 2025.3 (or 2022.4) export to ``out``; returns what it holds."""

@final
class TimelineWriter:
    """A Perfetto protobuf or Chrome JSON timeline file being written (``traceforge export``)."""

    def __new__(cls, path: str | os.PathLike[str], format: str) -> TimelineWriter: ...
    def track(
        self,
        uuid: int,
        name: str,
        parent: int | None = None,
        pid: int | None = None,
        tid: int | None = None,
        counter: bool = False,
        unit: str | None = None,
        rank: int = 0,
    ) -> None:
        """Declare a track (parents first): a process, a thread, a counter or a plain named track."""
    def slices(self, stream: object) -> int:
        """Write the slices of an Arrow stream (``track, start_ns, end_ns, name[, flow_out, flow_in]``)."""
    def counters(self, stream: object) -> int:
        """Write the counter samples of an Arrow stream (``track, ts_ns, value``)."""
    def finish(self) -> dict[str, int]:
        """Flush and close the file; returns what was written."""
