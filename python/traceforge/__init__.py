"""traceforge: turn Nsight Systems and Nsight Compute captures of GPU workloads into answers.

Typical use::

    import traceforge
    tf = traceforge.connect("traceforge.duckdb")
    tf.ingest(["run.nsys-rep"])
    tf.sql("SELECT device_id, utilization, max_concurrency FROM device_metrics")  # polars DataFrame
"""

from __future__ import annotations

# Not `typing.TYPE_CHECKING`: importing typing (and re) here cost the command's first 10 ms, in which
# Ctrl-C gave a traceback. mypy treats a constant of this name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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

#: The exception classes re-exported here (from :mod:`traceforge.errors`, imported on first use).
_ERRORS = frozenset(
    {
        "CorruptExportError",
        "InputNotFoundError",
        "MissingTableError",
        "NotAnExportError",
        "NsysNotFoundError",
        "QueryError",
        "StoreError",
        "TraceforgeError",
        "UnsupportedSchemaError",
    }
)


def __getattr__(name: str) -> Any:
    """``traceforge.__version__`` and the API (``connect``, ``Traceforge``), looked up on first use.

    The one version source is the Cargo workspace: maturin writes it into the package metadata
    (``dynamic = ["version"]`` in pyproject.toml). Looked up lazily: ``import traceforge`` stays free of
    ``importlib.metadata`` (DuckDB imports it anyway by the time an ingest records the version). The API
    and the error classes are lazy so that the ``traceforge`` command starts by installing its Ctrl-C handling
    (``traceforge.__main__``), not by importing the store (50 ms in which Ctrl-C gave a traceback).
    """
    if name == "__version__":
        return _version()
    if name in ("Traceforge", "connect"):
        from . import api

        return getattr(api, name)
    if name in _ERRORS:
        from . import errors

        return getattr(errors, name)
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
