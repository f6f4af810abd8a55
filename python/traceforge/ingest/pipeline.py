"""The one ingest entry point, :func:`run`: what ``Traceforge.ingest`` and ``traceforge ingest`` both call.

One path for every caller: the inputs are expanded by :func:`traceforge.ingest.inputs.expand_inputs`,
every failure is recorded (and every landed file cleared) by :mod:`traceforge.ingest.failures`, ncu CSV
exports are loaded directly, and the traces go one of two ways:

* in this process (``mode="none"`` without ``output``, the default for one job): each file is read by the
  Rust core and written in one transaction (:mod:`traceforge.ingest.trace`), no job or staging round trip;
  one trace alone checkpoints at its commit. When ``run`` opens the store itself (the CLI passes a path),
  the first export is read ahead on background threads while DuckDB is imported and the store opens.
* through jobs (``concurrent``, ``dask-futures``, or an ``output`` dataset):
  :class:`traceforge.ingest.batch.Batch`.

When ``run`` opens the store itself it shares the DuckDB file: before each export is read and after each
trace is written, ``Store.share`` frees it if a reader waits for it (or it has been held a while), so
``runs``, ``sql`` or ``report`` on the same store wait at most one trace's transaction, not the whole batch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import errors
from ..errors import TraceforgeError
from .failures import as_error, beside_note, clear_failures, for_report, record_failure
from .inputs import Expansion, check_input, expand_inputs, file_identity
from .trace import IngestOutcome

if TYPE_CHECKING:
    from ..store import Store
    from .trace import PhaseCallback, ReadAhead, TraceData

#: Execution modes of ``mode``/``--mode`` (the names nsys recipes use).
MODES: tuple[str, ...] = ("none", "concurrent", "dask-futures")


@dataclass
class IngestReport:
    """What one ingest did.

    Attributes:
        outcomes: one per file (and per input that named no usable file), in completion order.
        mode: the execution mode used.
        workers: how many files were processed at once.
        seconds: wall time of the whole ingest.
        worker_peak_rss_bytes: per worker process, its peak resident memory (jobs only).
        load_seconds: wall seconds during which the coordinator was loading staged partitions into the
            store (jobs only): near ``seconds``, the one writer is the bottleneck.
        not_captures: ``(path, why)`` per file a directory or pattern reached that is recognisably not a
            capture (an ``nsys stats`` CSV): left out, with no outcome and no failure row.
        excluded: the files (and directories) ``exclude`` left out.
    """

    outcomes: list[IngestOutcome] = field(default_factory=list)
    mode: str = "none"
    workers: int = 1
    seconds: float = 0.0
    worker_peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    not_captures: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Count the outcomes with this status (``ingested``, ``skipped``, ``failed``)."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failures(self) -> list[IngestOutcome]:
        """The failed outcomes."""
        return [o for o in self.outcomes if o.status == "failed"]


def resolve_mode(mode: str | None, jobs: int) -> str:
    """Pick the execution mode: the one asked for, else ``concurrent`` for several jobs, ``none`` for one."""
    if jobs < 1:
        raise errors.SpecError(f"--jobs must be at least 1, not {jobs}")
    if mode is None:
        return "concurrent" if jobs > 1 else "none"
    if mode not in MODES:
        raise errors.SpecError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "none" and jobs > 1:
        raise errors.SpecError("--mode none runs one job at a time; use --mode concurrent with --jobs")
    return mode


def run(
    store: Store | str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    force: bool = False,
    jobs: int = 1,
    mode: str | None = None,
    scheduler: str | None = None,
    output: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[IngestOutcome], None] | None = None,
    exclude: Iterable[str] = (),
    on_phase: PhaseCallback | None = None,
) -> IngestReport:
    """Ingest files, directories and glob patterns; never stops at a bad file.

    Args:
        store: the writable store, or the path of one to open (and close) here; None: the default store.
        inputs: files, directories (searched recursively) and glob patterns.
        force: re-ingest content already stored, replacing its rows (and partitions).
        jobs: files processed at once (worker processes, or Dask workers of a local cluster).
        mode: ``none``, ``concurrent`` or ``dask-futures``; None picks ``concurrent`` when ``jobs`` > 1.
        scheduler: Dask scheduler address for ``dask-futures`` (else ``DASK_SCHEDULER_ADDRESS``, else a
            ``LocalCluster`` of ``jobs`` workers).
        output: a Parquet dataset directory that also keeps every trace's partition.
        threads: Rust core threads per file; None sizes them so jobs x threads = the cores.
        on_start: called once with the number of outcomes to expect.
        on_outcome: called with each outcome as it lands (for progress display).
        exclude: glob patterns of files to leave out of directories and patterns (matched against the path
            relative to the directory searched, and the file name; :func:`expand_inputs`).
        on_phase: called as each file read in this process goes (file, phase, rows stored so far):
            ``reading``, ``exporting with nsys``, ``storing kernels``, ..., ``committing`` (for progress).

    Returns:
        The report; failures are in it and in ``ingest_failures``, never raised.

    Raises:
        SchedulerUnavailableError: the Dask scheduler cannot be reached (before anything was written).
        SpecError: an invalid mode or job count.
        StoreError: the store cannot be opened.
        IngestInterrupted: Ctrl-C; the traces already stored are kept.
    """
    from ..store import Store

    mode = resolve_mode(mode, jobs)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    expansion = expand_inputs(items, exclude=[exclude] if isinstance(exclude, str) else exclude)
    direct = mode == "none" and output is None
    opened = not isinstance(store, Store)
    # Reading the first export overlaps importing DuckDB and opening the store; with a store already
    # open there is nothing left to overlap.
    try:
        ahead = _read_ahead(expansion, threads) if direct and opened else None
    except KeyboardInterrupt as exc:
        raise errors.IngestInterrupted(
            "ingest interrupted before anything was read; nothing was stored"
        ) from exc
    try:
        try:
            target = Store(store) if not isinstance(store, Store) else store
        except KeyboardInterrupt as exc:
            raise errors.IngestInterrupted(
                "ingest interrupted while the store was opening; nothing was stored"
            ) from exc
        try:
            if opened:
                # Ours alone: let other processes read the file whenever no trace is being written.
                target.release_between_traces = True
            return _run(
                target,
                expansion,
                force=force,
                jobs=jobs,
                mode=mode,
                scheduler=scheduler,
                output=None if output is None else os.fspath(output),
                threads=threads,
                on_start=on_start,
                on_outcome=on_outcome,
                ahead=ahead,
                on_phase=on_phase,
            )
        finally:
            if opened:
                target.close()
    finally:
        if ahead is not None:
            ahead.close()


def _run(
    store: Store,
    expansion: Expansion,
    *,
    force: bool,
    jobs: int,
    mode: str,
    scheduler: str | None,
    output: str | None,
    threads: int | None,
    on_start: Callable[[int], None] | None,
    on_outcome: Callable[[IngestOutcome], None] | None,
    ahead: ReadAhead | None,
    on_phase: PhaseCallback | None = None,
) -> IngestReport:
    started = time.perf_counter()
    batch = None
    if mode != "none" or output is not None:
        from .batch import Batch

        batch = Batch(store, mode=mode, jobs=jobs, scheduler=scheduler, output=output)
    _release(store)
    report = IngestReport(mode=mode, workers=1 if batch is None else batch.workers)
    report.not_captures, report.excluded = expansion.skipped, expansion.excluded
    if on_start is not None:
        on_start(len(expansion.paths) + len(expansion.problems))

    def emit(outcome: IngestOutcome) -> None:
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        if expansion.skipped:  # an earlier, greedier ingest recorded them as failures
            clear_failures(store, [path for path, _why in expansion.skipped])
        for path, error in expansion.problems:
            record_failure(store, path, None, error)
            emit(IngestOutcome(path, "failed", None, str(error), error))
        # ncu CSV exports are small tables of their own (not traces): ingested here, whatever the mode.
        for path in [p for p in expansion.paths if p.lower().endswith(".csv")]:
            emit(_ingest_csv(store, path, force=force))
        traces = [p for p in expansion.paths if not p.lower().endswith(".csv")]
        if batch is not None:
            batch.run(traces, emit, force=force, threads=threads)
            report.worker_peak_rss_bytes = batch.worker_peak_rss_bytes
            report.load_seconds = batch.load_busy_s
        else:
            from .batch import available_cores

            # One trace: checkpoint at its commit rather than log it and write it again at close (Store doc).
            checkpointing = store.checkpoint_each_commit() if len(traces) == 1 else contextlib.nullcontext()
            with checkpointing:
                for path in traces:
                    outcome = ingest_one(
                        store,
                        path,
                        force=force,
                        threads=threads or available_cores(),
                        ahead=ahead,
                        on_phase=on_phase,
                    )
                    _release(store)
                    emit(outcome)
    except KeyboardInterrupt as exc:
        raise errors.IngestInterrupted(interrupted_message(store)) from exc
    finally:
        if batch is not None:
            batch.close()
    report.seconds = time.perf_counter() - started
    return report


def _release(store: Store) -> None:
    """Let other processes have the store's file if they want it (``Store.share``), when ``run`` opened it."""
    if store.release_between_traces:
        store.share()


def interrupted_message(store: Store) -> str:
    """What Ctrl-C left: which traces this ingest stored (``store.committed``), and that the rest was not.

    The commit and its record are one step Ctrl-C cannot split (``write_trace``), so a trace named here
    is stored whole and the one being read or written when Ctrl-C came is not stored at all.
    """
    stored = len(store.committed)
    todo = "run the same command again to finish (stored files are skipped)"
    if not stored:
        return f"ingest interrupted; nothing was stored, the store is as it was; {todo}"
    last, where = store.committed[-1]
    last_text = f"the last, {where} (trace {last}), is stored whole"
    return (
        f"ingest interrupted after {stored} trace(s) were stored ({last_text}); any trace still being read "
        f"or written when it stopped was not stored; {todo}"
    )


def _read_ahead(expansion: Expansion, threads: int | None) -> ReadAhead | None:
    """Start reading the first export now, if the first trace to ingest is a plain ``.sqlite`` file."""
    from .batch import available_cores
    from .trace import ReadAhead

    first = next((p for p in expansion.paths if not p.lower().endswith(".csv")), None)
    if first is None or not first.lower().endswith(".sqlite"):
        return None
    try:
        return ReadAhead(first, threads=threads or available_cores())
    except TraceforgeError:
        return None  # reported when the ingest reaches the file, as for any other


def ingest_one(
    store: Store,
    path: str,
    *,
    force: bool = False,
    threads: int = 0,
    ahead: ReadAhead | None = None,
    on_phase: PhaseCallback | None = None,
) -> IngestOutcome:
    """Ingest one export or report in this process: read, write, record the outcome; never raises.

    A failure is recorded in ``ingest_failures`` (and returned as a ``failed`` outcome); a file that lands
    or is found stored has its earlier failure cleared.

    Args:
        store: the writable store.
        path: the ``.sqlite`` export or ``.nsys-rep`` report (absolute, as the expansion names it).
        force: re-ingest content already stored.
        threads: Rust core threads (0: all cores).
        ahead: an export already being read; used if it is this file.
        on_phase: hears the file's phases (``run``'s ``on_phase``).

    Raises:
        KeyboardInterrupt: Ctrl-C; nothing of this trace was written.
    """
    started = time.perf_counter()
    seen: dict[str, str] = {}
    report = path.lower().endswith(".nsys-rep")
    try:
        if report:
            from .nsysrep import export_beside, export_to_sqlite

            beside = export_beside(path)
            if beside is not None:
                # Its export is already there (nsys stats, nsys profile --export, an earlier export):
                # read it rather than need an nsys able to read this report.
                seen["export"] = beside
                outcome = _ingest_sqlite(store, beside, path, force, threads, None, seen, on_phase)
                outcome.notes.append(beside_note(beside))
            else:
                with tempfile.TemporaryDirectory(prefix="traceforge-export-") as tmp:
                    _release(store)  # nsys export takes seconds; the store is not needed meanwhile
                    if on_phase is not None:
                        on_phase(path, "exporting with nsys", 0)
                    export = export_to_sqlite(path, tmp)
                    seen["temporary_export"] = export
                    outcome = _ingest_sqlite(store, export, path, force, threads, None, seen, on_phase)
        else:
            outcome = _ingest_sqlite(store, path, path, force, threads, ahead, seen, on_phase)
    except Exception as exc:
        from ..interrupts import ctrl_c_received

        if ctrl_c_received():  # what failed was cut short by Ctrl-C (e.g. an interrupted import)
            raise KeyboardInterrupt from exc
        error = as_error(exc, path)
        if report:  # the user's file, not the (temporary) export of the report
            temporary = "temporary_export" in seen
            read_from = seen.get("temporary_export") or seen.get("export")
            error = for_report(error, path, read_from, temporary=temporary)
        record_failure(store, path, seen.get("fingerprint"), error)
        return IngestOutcome(
            path, "failed", None, error.message, error, seconds=time.perf_counter() - started
        )
    clear_failures(store, [path])
    outcome.seconds = time.perf_counter() - started
    return outcome


def _ingest_sqlite(
    store: Store,
    export: str,
    source: str,
    force: bool,
    threads: int,
    ahead: ReadAhead | None,
    seen: dict[str, str],
    on_phase: PhaseCallback | None = None,
) -> IngestOutcome:
    from .trace import check_export, fingerprint_file, read_trace, skipped, write_trace

    ahead = ahead if ahead is not None and ahead.covers(export) else None
    try:
        check_input(export)
        # Before anything is hashed or read: what the file is now (checked again at the commit) and
        # whether its header is a SQLite database's at all (a 50 GB file of zeros is refused at once).
        identity = ahead.identity if ahead is not None else file_identity(export)
        if ahead is None:
            check_export(export)

        def read(fingerprint: str | None) -> TraceData:
            _release(store)  # opening an export (its tables stream at the write): the file is free meanwhile
            if on_phase is not None:
                on_phase(source, "reading", 0)
            if ahead is not None:
                return ahead.take(source_path=source)
            if fingerprint is None:
                data = read_trace(export, threads=threads, source_path=source)
                data.identity = identity
                return data
            return read_trace(
                export, threads=threads, source_path=source, fingerprint=fingerprint, identity=identity
            )

        if force or not store.has_file_size(identity.size):
            # No stored trace can hold this content (none has its size): hash the file while reading it.
            data = read(None)
        else:
            fingerprint = ahead.fingerprint() if ahead is not None else fingerprint_file(export)
            seen["fingerprint"] = fingerprint
            existing = store.has_fingerprint(fingerprint)
            if existing:
                return skipped(store, source, fingerprint, existing)
            data = read(fingerprint)
        seen["fingerprint"] = data.fingerprint
        return write_trace(store, data, force=force, on_phase=on_phase)
    finally:
        if ahead is not None:
            ahead.close()  # the content was stored already, or reading failed: stop reading it


def _ingest_csv(store: Store, path: str, *, force: bool) -> IngestOutcome:
    from .ncu import ingest_ncu_csv

    try:
        check_input(path)
        outcome = ingest_ncu_csv(store, path, force=force)
    except Exception as exc:
        error = as_error(exc, path)
        record_failure(store, path, None, error)
        return IngestOutcome(path, "failed", None, error.message, error)
    clear_failures(store, [path])
    return outcome
