"""traceforge: turn Nsight Systems and Nsight Compute captures of GPU workloads into answers.

Typical use::

    import traceforge
    tf = traceforge.connect("traceforge.duckdb")
    tf.ingest(["run.nsys-rep"])
    tf.sql("SELECT device_id, utilization, max_concurrency FROM device_metrics")  # polars DataFrame
"""

from __future__ import annotations

from .api import Traceforge, connect
from .errors import (
    CorruptExportError,
    InputNotFoundError,
    MissingTableError,
    NotAnExportError,
    NsysNotFoundError,
    QueryError,
    StoreError,
    TraceforgeError,
    UnsupportedSchemaError,
)


def __getattr__(name: str) -> str:
    """``traceforge.__version__``, read from the installed package's metadata on first use.

    The one version source is the Cargo workspace: maturin writes it into the package metadata
    (``dynamic = ["version"]`` in pyproject.toml). Looked up lazily: ``import traceforge`` stays free of
    ``importlib.metadata`` (DuckDB imports it anyway by the time an ingest records the version).
    """
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    global _VERSION
    if _VERSION is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _VERSION = version("traceforge")
        except PackageNotFoundError:  # a source tree on sys.path, not installed
            _VERSION = "0+unknown"
    return _VERSION


_VERSION: str | None = None

__all__ = [
    "CorruptExportError",
    "InputNotFoundError",
    "MissingTableError",
    "NotAnExportError",
    "NsysNotFoundError",
    "QueryError",
    "StoreError",
    "Traceforge",
    "TraceforgeError",
    "UnsupportedSchemaError",
    "__version__",
    "connect",
]
