"""Ingesting captures into the store.

:func:`run` is the one entry point: ``Traceforge.ingest`` and ``traceforge ingest`` both call it.

* ``pipeline``: :func:`run` itself; the in-process path (read -> write per file, read-ahead of the first
  export while the store opens, checkpoint at the commit of a lone trace);
* ``inputs``: the one input expander (files, directories, globs -> files) and ``EXPORT_SUFFIXES``;
* ``trace``: the reader and writer of one trace (``read_trace``, ``write_trace``, ``ReadAhead``);
* ``failures``: the one failure recorder (``ingest_failures``: recorded, replaced, cleared);
* ``batch``: jobs in worker processes or on Dask, loaded through Parquet partitions;
* ``nsysrep``: ``.nsys-rep`` reports exported with nsys; ``ncu``: Nsight Compute CSV exports;
* ``reanalyze``: derived tables recomputed from stored events.

Importing this package imports neither DuckDB nor polars.
"""

from __future__ import annotations

from .inputs import EXPORT_SUFFIXES, Expansion, expand_inputs
from .pipeline import MODES, IngestReport, ingest_one, resolve_mode, run
from .trace import IngestOutcome, TraceData, read_trace, write_trace

__all__ = [
    "EXPORT_SUFFIXES",
    "MODES",
    "Expansion",
    "IngestOutcome",
    "IngestReport",
    "TraceData",
    "expand_inputs",
    "ingest_one",
    "read_trace",
    "resolve_mode",
    "run",
    "write_trace",
]
