"""Type stubs of the native extension ``traceforge._core`` (private: use the ``traceforge`` API)."""

import os
from typing import Any

class ArrowStream:
    """A single-use Arrow C stream (``__arrow_c_stream__``) of record batches."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

class TraceHandle:
    """An export being ingested."""

    def info(self) -> dict[str, Any]: ...
    def api_calls(self) -> ArrowStream:
        """Rows of ``tf_store.api_call_rows`` (stream before ``finish``)."""
    def finish(self) -> None: ...
    def table(self, name: str) -> ArrowStream: ...
    @staticmethod
    def table_names() -> list[str]:
        """Tables ``table`` emits, in write order.

        Public tables, and the storage tables ``kernel_rows``, ``kernel_classes``, ``api_call_classes`` and
        ``gap_rows`` (each
        dictionary after the stream that builds it).
        """
    def cancel(self) -> None: ...

def build_info() -> dict[str, str]: ...
def fingerprint(path: str | os.PathLike[str]) -> str: ...

class CancelToken:
    """A flag that stops an ``open_trace`` running on another thread."""

    cancelled: bool
    def cancel(self) -> None: ...

def open_trace(
    path: str | os.PathLike[str], threads: int = 0, cancel: CancelToken | None = None
) -> TraceHandle: ...
def rederive(kernels: object, memops: object, nvtx_ranges: object) -> dict[str, ArrowStream]: ...
def synthesize(
    out: str | os.PathLike[str],
    kernels: int,
    devices: int,
    streams: int,
    seed: int,
    requests: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]: ...
