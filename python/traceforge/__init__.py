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

__version__ = "0.1.0"

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
