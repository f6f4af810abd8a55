"""Ingesting captures into the store.

:func:`run` is the one entry point (the API's ``Traceforge.ingest`` and ``traceforge ingest`` both call
it). ``inputs`` expands what the user typed into files; ``trace`` reads one export with the Rust core and
writes it in one transaction; ``batch`` runs many files in worker processes or on Dask; ``failures``
records and clears ``ingest_failures``; ``nsysrep`` exports ``.nsys-rep`` reports with nsys; ``ncu``
loads Nsight Compute CSV exports. Importing this package imports neither DuckDB nor polars.
"""

from __future__ import annotations

from .inputs import EXPORT_SUFFIXES, Expansion, expand_inputs
from .pipeline import MODES, IngestReport, ingest_one, resolve_mode, run
from .trace import IngestOutcome, ReadAhead, TraceData, read_trace, write_trace

__all__ = [
    "EXPORT_SUFFIXES",
    "MODES",
    "Expansion",
    "IngestOutcome",
    "IngestReport",
    "ReadAhead",
    "TraceData",
    "expand_inputs",
    "ingest_one",
    "read_trace",
    "resolve_mode",
    "run",
    "write_trace",
]
