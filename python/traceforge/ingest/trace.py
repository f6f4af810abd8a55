"""The reader and writer of one trace: one export, one transaction.

``read_trace`` runs the Rust reader and metric code on one export (``ReadAhead`` does it on background
threads while the caller gets ready); ``write_trace`` lands every table of that trace in one DuckDB
transaction, so a failure or Ctrl-C leaves the store exactly as it was. :func:`traceforge.ingest.run` is
what calls them, for one file or many.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptExportError, StoreError, TraceforgeError
from ..interrupts import interruptible, interrupts_deferred
from ..store import Store
from ..store.schema import METRIC_VERSION
from ..store.sql_params import bind
from ..store.storage import delete_trace_rows, insert_trace_rows
from .inputs import FileIdentity, changed_since, check_input, check_unchanged, file_identity


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
    #: Lines worth telling the user about this trace (e.g. that it was captured in CUDA graph mode).
    notes: list[str] = field(default_factory=list)


@dataclass
class TraceData:
    """One export read by the Rust core, ready to be written (single use)."""

    trace_id: str
    fingerprint: str
    source_path: str
    trace_row: dict[str, Any]
    handle: Any  # traceforge._core.TraceHandle
    #: The export as it was before it was hashed and read: checked again before the commit.
    identity: FileIdentity | None = None


def fingerprint_file(path: str) -> str:
    """xxh3-128 of the file's bytes (32 hex digits); the header is checked first, Ctrl-C stops it.

    Raises:
        NotAnExportError, CorruptExportError: not a regular file holding a SQLite database (seen from its
            first 100 bytes, before anything is hashed).
        KeyboardInterrupt: Ctrl-C (the hashing stopped).
    """
    from .. import _core

    _core.check_export(path)
    token = _core.CancelToken()
    return str(interruptible(lambda: _core.fingerprint(path, token), token.cancel))


def check_export(path: str) -> None:
    """Refuse, from its header alone, a file that is not a whole SQLite database (before any hashing)."""
    from .. import _core

    _core.check_export(path)


def refuse_if_changed(path: str, identity: FileIdentity | None, error: BaseException) -> None:
    """Raise ``InputChangedError`` instead of ``error`` when the file changed while it was read.

    A reader meeting a file rewritten under it reports damage that is not the file's fault.
    """
    if identity is not None and changed_since(path, identity):
        try:
            check_unchanged(path, identity)
        except TraceforgeError as changed:
            raise changed from error


def trace_id_from_fingerprint(fingerprint: str) -> str:
    """The 16-hex-digit trace id of a fingerprint."""
    return fingerprint[:16]


def read_trace(
    path: str,
    *,
    threads: int = 0,
    source_path: str | None = None,
    fingerprint: str | None = None,
    identity: FileIdentity | None = None,
) -> TraceData:
    """Open one SQLite export with the Rust core (GPU operations read; API calls not yet streamed).

    Pass ``fingerprint`` when the caller already hashed the file, so a multi-GB export is read once less,
    and then ``identity``, the file as it was before that hashing (:func:`file_identity`), so a file
    changed since is refused at the commit.
    """
    from .. import _core

    if fingerprint is None:
        # Hash the file while the core reads it, instead of before: the reader leaves part of a core idle.
        return ReadAhead(path, threads=threads).take(source_path=source_path)
    check_input(path)
    identity = identity or file_identity(path)
    token = _core.CancelToken()
    try:
        handle = interruptible(lambda: _core.open_trace(path, threads, token), token.cancel)
    except TraceforgeError as exc:
        refuse_if_changed(path, identity, exc)
        raise
    return _trace_data(handle, fingerprint, path, source_path, identity)


def _trace_data(
    handle: Any, fingerprint: str, path: str, source_path: str | None, identity: FileIdentity | None
) -> TraceData:
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
        "cuda_graph_trace": info.get("cuda_graph_trace"),
    }
    return TraceData(trace_id, fingerprint, row["source_path"], row, handle, identity)


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
        # The identity first, then the header (refused before a byte is hashed), then hash and read.
        self.identity = file_identity(path)
        _core.check_export(path)
        self.path = os.path.abspath(path)  # errors name it as the batch names its files
        self._key = os.path.realpath(path)
        self._token = _core.CancelToken()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="traceforge-read-ahead")
        self._hashing = self._pool.submit(_core.fingerprint, path, self._token)
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
            try:
                handle = self._reading.result()
                fingerprint = self.fingerprint()
            except TraceforgeError as exc:
                refuse_if_changed(self.path, self.identity, exc)
                raise
        except BaseException:
            self.close()  # a failure or Ctrl-C while waiting: stop what still runs
            raise
        # Not close(): the token now belongs to the trace, whose streams it would stop.
        self._open = False
        self._pool.shutdown(wait=True)
        return _trace_data(handle, fingerprint, self.path, source_path, self.identity)

    def close(self) -> None:
        """Stop the reading if it is still running and drop its result (no-op once taken)."""
        if self._open:
            self._open = False
            self._token.cancel()
            self._pool.shutdown(wait=True)


def stored_source(store: Store, fingerprint: str) -> str | None:
    """The source path (or, without one, the trace id) under which this content is stored; None if not."""
    row = store.con.execute(
        bind("SELECT coalesce(source_path, trace_id) FROM traces WHERE fingerprint = ?", [fingerprint])
    ).fetchone()
    return None if row is None else str(row[0])


def already_stored(path: str, stored_as: str, trace_id: str) -> str:
    """The message of a file skipped because its content is stored (naming the other file, if any)."""
    same = "" if os.path.abspath(stored_as) == os.path.abspath(path) else f" as {stored_as}"
    return f"already stored{same} (trace {trace_id})"


def skipped(store: Store, path: str, fingerprint: str, trace_id: str) -> IngestOutcome:
    """The outcome of a file whose content is already stored."""
    stored_as = stored_source(store, fingerprint) or trace_id
    return IngestOutcome(
        os.path.abspath(path), "skipped", trace_id, already_stored(path, stored_as, trace_id)
    )


def graph_mode_note(cuda_graph_trace: str | None, graph_exec_count: int) -> str | None:
    """The line ``ingest`` prints for a trace captured with ``--cuda-graph-trace=graph``; None otherwise."""
    if cuda_graph_trace != "graph" or graph_exec_count <= 0:
        return None
    return (
        f"CUDA graph mode: {graph_exec_count:,} graph executions recorded whole (graph_launches, graph_ns); "
        "per-kernel tables (kernels, kernel_summary) do not see inside them: re-capture with "
        "--cuda-graph-trace=node for that"
    )


#: Called as an ingest of one file goes: (file, phase, rows stored so far), e.g. ``("a.sqlite", "storing
#: kernels", 1_200_000)``; for progress display only.
PhaseCallback = Callable[[str, str, int], None]

#: What the progress line calls the tables the core streams (the storage tables by their public views).
_PHASE_NAMES = {
    "kernel_rows": "kernels",
    "kernel_classes": "kernels",
    "api_call_rows": "API calls",
    "api_call_classes": "API calls",
    "gap_rows": "gaps",
    "gil_rows": "GIL ranges",
    "os_call_rows": "OS calls",
    "os_call_names": "OS calls",
    "gpu_metric_rows": "GPU metrics",
    "gpu_metric_classes": "GPU metrics",
}


def write_trace(
    store: Store, data: TraceData, *, force: bool = False, on_phase: PhaseCallback | None = None
) -> IngestOutcome:
    """Write every table of one trace in one transaction; skip content already stored unless ``force``.

    ``on_phase`` hears each table as it starts to stream (with the rows stored so far) and the commit.
    The export is checked to be unchanged (size, times, inode) just before the commit; a file rewritten
    while it was read is refused (``InputChangedError``) with nothing stored. Ctrl-C before the commit
    rolls everything back; the commit and ``store.committed`` (what the interruption message reports) are
    one step that Ctrl-C cannot split.
    """
    started = time.perf_counter()
    existing = store.has_fingerprint(data.fingerprint)
    if existing and not force:
        return skipped(store, data.source_path, data.fingerprint, existing)
    import duckdb

    try:
        with store.ingest_memory(long_strings=int(data.handle.info().get("long_string_bytes") or 0)):
            info = _write_tables(store, data, existing, on_phase)
    except KeyboardInterrupt:
        data.handle.cancel()
        raise
    except RuntimeError as exc:
        # DuckDB reports Ctrl-C during a query as a RuntimeError("Query interrupted").
        data.handle.cancel()
        if "interrupted" in str(exc).lower():
            raise KeyboardInterrupt from exc
        _raise_stream_error(data, exc)
        raise
    except duckdb.Error as exc:
        data.handle.cancel()
        text = " ".join(str(exc).split())
        if "interrupt" in text.lower():
            raise KeyboardInterrupt from exc
        _raise_stream_error(data, exc)
        export = data.trace_row["export_path"]
        if "arrow" in text.lower() or export in text:
            # The Rust reader failed mid-stream (e.g. a page of the export is corrupt).
            raise CorruptExportError(f"reading the export failed: {text}", path=export) from exc
        raise StoreError(f"writing the trace failed: {text}", path=store.path) from exc
    note = graph_mode_note(info.get("cuda_graph_trace"), int(info.get("graph_exec_count") or 0))
    return IngestOutcome(
        data.source_path,
        "ingested",
        data.trace_id,
        f"{info['kernel_count']:,} kernels, {info['api_call_count']:,} API calls",
        kernel_count=int(info["kernel_count"]),
        seconds=time.perf_counter() - started,
        notes=[note] if note else [],
    )


def _raise_stream_error(data: TraceData, exc: BaseException) -> None:
    """Raise the core's own error when one of the trace's streams failed under DuckDB.

    DuckDB reports it wrapped (``Invalid Input Error: arrow_scan: ... External error: ...``); the core
    kept the error itself, with its class, path and whole reason. A file that changed while it was read
    is reported as that, whatever the reader met.
    """
    export = data.trace_row["export_path"]
    try:
        data.handle.raise_stream_error()
    except TraceforgeError as original:
        refuse_if_changed(export, data.identity, original)
        raise original from exc
    refuse_if_changed(export, data.identity, exc)


def _write_tables(
    store: Store, data: TraceData, existing: str | None, on_phase: PhaseCallback | None
) -> dict[str, Any]:
    handle = data.handle
    rows = 0
    export = data.trace_row["export_path"]
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        if existing:
            delete_trace_rows(con, existing)
        # In the core's write order: API calls first (streaming them matches launches), then the metrics.
        tables = handle.tables()
        while True:
            # Asking for the pair after api_call_rows derives the metrics (seconds on a large trace):
            # off the main thread, so that Ctrl-C is seen at once.
            pair = interruptible(lambda: next(tables, None), handle.cancel)
            if pair is None:
                break
            table, stream = pair
            if on_phase is not None:
                on_phase(data.source_path, f"storing {_PHASE_NAMES.get(table, table)}", rows)
            rows += insert_trace_rows(con, table, stream, data.trace_id)
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
        if data.identity is not None:
            # Every byte was read (the last stream is consumed): the file must still be what was hashed.
            check_unchanged(export, data.identity)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if on_phase is not None:
        on_phase(data.source_path, "committing", rows)
    with interrupts_deferred():
        con.execute("COMMIT")
        store.committed.append((data.trace_id, data.source_path))
    return dict(info)
