"""Ingesting captures into the store: one trace, one transaction.

``read_trace`` runs the Rust reader and metric code on one export; ``write_trace`` lands every table of
that trace in one DuckDB transaction, so a failure or Ctrl-C leaves the store exactly as it was.
``ingest_paths`` does this for many files, continuing past bad ones.
"""

from __future__ import annotations

import datetime as _dt
import glob
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    CorruptExportError,
    InputNotFoundError,
    InputPermissionError,
    NotAnExportError,
    StoreError,
    TraceforgeError,
)
from ..store import Store
from ..store.schema import DERIVED_STORAGE, DERIVED_TABLES, METRIC_VERSION
from ..store.sql_params import bind
from ..store.storage import delete_storage_rows, delete_trace_rows, insert_trace_rows

#: Suffixes ``ingest`` accepts when expanding a directory.
EXPORT_SUFFIXES = (".sqlite", ".nsys-rep", ".csv")


@dataclass
class IngestOutcome:
    """What happened to one input file."""

    path: str
    status: str  # "ingested" | "skipped" | "failed"
    trace_id: str | None = None
    message: str = ""
    error: TraceforgeError | None = field(default=None, repr=False)
    kernel_count: int = 0
    seconds: float = 0.0


@dataclass
class TraceData:
    """One export read by the Rust core, ready to be written (single use)."""

    trace_id: str
    fingerprint: str
    source_path: str
    trace_row: dict[str, Any]
    handle: Any  # traceforge._core.TraceHandle


def fingerprint_file(path: str) -> str:
    """xxh3-128 of the file's bytes (32 hex digits)."""
    from .. import _core

    return str(_core.fingerprint(path))


def trace_id_from_fingerprint(fingerprint: str) -> str:
    """The 16-hex-digit trace id of a fingerprint."""
    return fingerprint[:16]


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Expand directories (recursively, by suffix) and glob patterns; keep other paths as given.

    A path that neither exists nor matches a glob is kept, so that ingesting it reports it missing.
    """
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _dirs, files in os.walk(p):
                for name in sorted(files):
                    if name.endswith(EXPORT_SUFFIXES):
                        out.append(os.path.join(root, name))
        elif not os.path.exists(p) and glob.has_magic(p):
            out.extend(sorted(glob.glob(p, recursive=True)))
        else:
            out.append(p)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def check_input(path: str) -> None:
    """Raise a clear error for a path that cannot be an input file."""
    if not os.path.lexists(path):
        raise InputNotFoundError("no such file", path=path)
    if not os.path.exists(path):
        raise InputNotFoundError("dangling symbolic link", path=path)
    if os.path.isdir(path):
        raise NotAnExportError("is a directory, not an nsys export", path=path)
    if not os.access(path, os.R_OK):
        raise InputPermissionError("permission denied", path=path)


def read_trace(
    path: str, *, threads: int = 0, source_path: str | None = None, fingerprint: str | None = None
) -> TraceData:
    """Open one SQLite export with the Rust core (GPU operations read; API calls not yet streamed).

    Pass ``fingerprint`` when the caller already hashed the file, so a multi-GB export is read once less.
    """
    from .. import _core

    if fingerprint is None:
        # Hash the file while the core reads it, instead of before: the reader leaves part of a core idle.
        return ReadAhead(path, threads=threads).take(source_path=source_path)
    check_input(path)
    handle = _core.open_trace(path, threads)
    return _trace_data(handle, fingerprint, path, source_path)


def _trace_data(handle: Any, fingerprint: str, path: str, source_path: str | None) -> TraceData:
    info = dict(handle.info())
    trace_id = trace_id_from_fingerprint(fingerprint)
    row = {
        "trace_id": trace_id,
        "source_path": os.path.abspath(source_path or path),
        "export_path": os.path.abspath(path),
        "fingerprint": fingerprint,
        "file_size_bytes": info["file_size_bytes"],
        "nsys_version": info["nsys_version"],
        "schema_version": info["schema_version"],
        "capture_start_utc_ns": info["capture_start_utc_ns"],
        "trace_start_ns": info["trace_start_ns"],
        "trace_end_ns": info["trace_end_ns"],
        "gpu_count": info["gpu_count"],
        "gpus": info["gpus"],
        "tables_present": info["tables_present"],
    }
    return TraceData(trace_id, fingerprint, row["source_path"], row, handle)


class ReadAhead:
    """One SQLite export hashed and read on background threads while the caller gets ready to store it.

    The reader and the hash are native and release the GIL, so they overlap the single-threaded start of
    an ingest (importing DuckDB, opening the store, looking the file up). The caller then either takes the
    result (:meth:`take`) or drops it (:meth:`close`, which stops the reading); it must do one of the two.
    """

    def __init__(self, path: str, *, threads: int = 0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from .. import _core

        check_input(path)
        self.path = os.path.abspath(path)  # errors name it as the batch names its files
        self._key = os.path.realpath(path)
        self._token = _core.CancelToken()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="traceforge-read-ahead")
        self._hashing = self._pool.submit(fingerprint_file, path)
        self._reading = self._pool.submit(_core.open_trace, path, threads, self._token)
        self._open = True

    def covers(self, path: str) -> bool:
        """Whether ``path`` is the file being read (and its result was not taken or dropped yet)."""
        return self._open and os.path.realpath(path) == self._key

    def fingerprint(self) -> str:
        """The file's fingerprint (waits for the hash; raises what hashing raised)."""
        return str(self._hashing.result())

    def take(self, *, source_path: str | None = None) -> TraceData:
        """The read trace (waits for the reader; raises what reading raised, as ``read_trace`` would)."""
        try:
            handle = self._reading.result()
            fingerprint = self.fingerprint()
        except BaseException:
            self.close()  # a failure or Ctrl-C while waiting: stop what still runs
            raise
        # Not close(): the token now belongs to the trace, whose streams it would stop.
        self._open = False
        self._pool.shutdown(wait=True)
        return _trace_data(handle, fingerprint, self.path, source_path)

    def close(self) -> None:
        """Stop the reading if it is still running and drop its result (no-op once taken)."""
        if self._open:
            self._open = False
            self._token.cancel()
            self._pool.shutdown(wait=True)


def write_trace(store: Store, data: TraceData, *, force: bool = False) -> IngestOutcome:
    """Write every table of one trace in one transaction; skip content already stored unless ``force``."""
    started = time.perf_counter()
    existing = store.has_fingerprint(data.fingerprint)
    if existing and not force:
        return IngestOutcome(
            data.source_path,
            "skipped",
            existing,
            f"already stored as trace {existing} (use --force to re-ingest)",
        )
    import duckdb

    try:
        with store.ingest_memory():
            info = _write_tables(store, data, existing)
    except KeyboardInterrupt:
        data.handle.cancel()
        raise
    except RuntimeError as exc:
        # DuckDB reports Ctrl-C during a query as a RuntimeError("Query interrupted").
        data.handle.cancel()
        if "interrupted" in str(exc).lower():
            raise KeyboardInterrupt from exc
        raise
    except duckdb.Error as exc:
        data.handle.cancel()
        text = " ".join(str(exc).split())
        if "interrupt" in text.lower():
            raise KeyboardInterrupt from exc
        if "arrow" in text.lower() or data.trace_row["export_path"] in text:
            # The Rust reader failed mid-stream (e.g. a page of the export is corrupt).
            raise CorruptExportError(
                f"reading the export failed: {text[:300]}", path=data.trace_row["export_path"]
            ) from exc
        raise StoreError(f"writing the trace failed: {text[:300]}", path=store.path) from exc
    return IngestOutcome(
        data.source_path,
        "ingested",
        data.trace_id,
        f"{info['kernel_count']:,} kernels, {info['api_call_count']:,} API calls",
        kernel_count=int(info["kernel_count"]),
        seconds=time.perf_counter() - started,
    )


def _write_tables(store: Store, data: TraceData, existing: str | None) -> dict[str, Any]:
    handle = data.handle
    with store.transaction() as con:
        if existing:
            delete_trace_rows(con, existing)
        insert_trace_rows(con, "api_call_rows", handle.api_calls(), data.trace_id)
        handle.finish()
        for table in handle.table_names():
            insert_trace_rows(con, table, handle.table(table), data.trace_id)
        info = handle.info()
        row = dict(data.trace_row)
        from .. import __version__

        start_ns = row.get("capture_start_utc_ns")
        row.update(
            kernel_count=info["kernel_count"],
            memop_count=info["memop_count"],
            api_call_count=info["api_call_count"],
            nvtx_count=info["nvtx_count"],
            traceforge_version=__version__,
            metric_version=METRIC_VERSION,
            ingested_at=_dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None),
            capture_start_utc=(
                _dt.datetime.fromtimestamp(start_ns / 1e9, _dt.timezone.utc).replace(tzinfo=None)
                if start_ns
                else None
            ),
        )
        columns = ", ".join(row)
        placeholders = ", ".join("?" for _ in row)
        con.execute(bind(f"INSERT INTO traces ({columns}) VALUES ({placeholders})", list(row.values())))
    return dict(info)


def ingest_file(store: Store, path: str, *, force: bool = False, threads: int = 0) -> IngestOutcome:
    """Ingest one file (``.sqlite`` export, ``.nsys-rep`` report or ncu ``.csv``); raises on failure."""
    started = time.perf_counter()
    check_input(path)
    if path.lower().endswith(".csv"):
        from .ncu import ingest_ncu_csv

        return ingest_ncu_csv(store, path, force=force)  # type: ignore[no-any-return]
    if path.lower().endswith(".nsys-rep"):
        from .nsysrep import export_to_sqlite

        with tempfile.TemporaryDirectory(prefix="traceforge-export-") as tmp:
            sqlite_path = export_to_sqlite(path, tmp)
            outcome = _ingest_sqlite(store, sqlite_path, force=force, threads=threads, source_path=path)
    else:
        outcome = _ingest_sqlite(store, path, force=force, threads=threads, source_path=path)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _ingest_sqlite(store: Store, path: str, *, force: bool, threads: int, source_path: str) -> IngestOutcome:
    # Skip before reading anything when this content may already be stored (a stored trace has the same
    # size); otherwise the file is hashed while it is read.
    fingerprint = None
    if not force and store.has_file_size(os.path.getsize(path)):
        fingerprint = fingerprint_file(path)
        existing = store.has_fingerprint(fingerprint)
        if existing:
            return IngestOutcome(
                os.path.abspath(source_path),
                "skipped",
                existing,
                f"already stored as trace {existing} (use --force to re-ingest)",
            )
    data = read_trace(path, threads=threads, source_path=source_path, fingerprint=fingerprint)
    return write_trace(store, data, force=force)


def ingest_paths(
    store: Store,
    paths: Iterable[str],
    *,
    force: bool = False,
    threads: int = 0,
    on_done: Callable[[IngestOutcome], None] | None = None,
) -> list[IngestOutcome]:
    """Ingest many files sequentially; a failing file is reported and the others still land."""
    outcomes = []
    for path in expand_paths(paths):
        try:
            outcome = ingest_file(store, path, force=force, threads=threads)
        except TraceforgeError as exc:
            if exc.path is None:
                exc.path = path
            outcome = IngestOutcome(os.path.abspath(path), "failed", None, str(exc), error=exc)
            record_failure(store, path, exc)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def record_failure(store: Store, path: str, exc: TraceforgeError) -> None:
    """Remember a failed file in ``ingest_failures`` (best effort: never masks the original error)."""
    try:
        store.con.execute(
            bind(
                "INSERT INTO ingest_failures VALUES (?, NULL, ?, ?, ?)",
                [
                    os.path.abspath(path),
                    exc.code,
                    exc.message,
                    _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None),
                ],
            ),
        )
    except Exception:  # noqa: BLE001 - a read-only or broken store must not hide the file's own error
        pass


def recompute_metrics(store: Store, trace_id: str) -> None:
    """Re-derive the derived tables of one stored trace from its stored event tables.

    Runs in the caller's transaction if one is open (``reanalyze`` wraps each trace in one); the original
    export is not needed. Rows get the current ``METRIC_VERSION``.
    """
    import polars as pl

    from .. import _core

    con = store.con

    def fetch(query: str) -> pl.DataFrame:
        # Read each result to the end before the next query runs: DuckDB 1.5 closes a connection's
        # pending result when another query starts on it, which would silently empty an open stream.
        return pl.DataFrame(con.sql(bind(query, [trace_id])))

    kernels = fetch(
        "SELECT device_id::BIGINT AS device_id, stream_id, start_ns, end_ns, name, pid, correlation_id, "
        "launch_tid, api_start_ns FROM kernels WHERE trace_id = $1"
    )
    memops = fetch(
        "SELECT device_id::BIGINT AS device_id, stream_id, op, copy_kind, start_ns, end_ns, bytes, pid, "
        "correlation_id, launch_tid, api_start_ns FROM memops WHERE trace_id = $1"
    )
    nvtx = fetch(
        "SELECT pid, tid, start_ns, end_ns, name, domain, kind, level::BIGINT AS level FROM nvtx_ranges "
        "WHERE trace_id = $1 ORDER BY range_index"
    )
    tables = _core.rederive(kernels, memops, nvtx)
    for table in DERIVED_TABLES:
        storage = DERIVED_STORAGE.get(table)
        if storage is None:
            con.execute(bind(f"DELETE FROM {table} WHERE trace_id = ?", [trace_id]))
        else:
            delete_storage_rows(con, storage, trace_id)
        written = storage or table
        insert_trace_rows(con, written, tables[written], trace_id)
    con.execute(bind("UPDATE traces SET metric_version = ? WHERE trace_id = ?", [METRIC_VERSION, trace_id]))
