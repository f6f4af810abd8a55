"""Batch ingest and re-analysis of trace archives: parallel, resumable, idempotent, optionally on Dask.

DuckDB allows one writer, so the expensive per-file work runs elsewhere and only the cheap load is serial:

* a **job** (:func:`run_job`, in a worker process or a Dask worker) fingerprints one file, skips it when that
  content is already stored, otherwise reads it with the Rust core and writes the trace as one hive partition
  of a Parquet dataset (:mod:`traceforge.dataset`): a staging dataset beside the store, or the user's
  ``--output`` dataset;
* the **coordinator** (:func:`run_batch`, in the calling process) loads the finished partitions into the
  store (those that finish close together share one transaction; each trace lands whole or not at all),
  records each failure with its reason in ``ingest_failures``, and never lets one file stop the others.

Every trace lands atomically and is one partition, so a batch killed at any point and started again does the
rest without duplicates: stored fingerprints are skipped, and partitions finished by the killed run are loaded
without reading their file again. Execution modes follow the vocabulary of nsys recipes: ``none`` (in this
process), ``concurrent`` (a local process pool), ``dask-futures`` (a Dask cluster: ``--scheduler ADDRESS``,
``DASK_SCHEDULER_ADDRESS``, or a ``LocalCluster`` started here).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..errors import InputNotFoundError, NotAnExportError, TraceforgeError
from ..store.sql_params import bind

if TYPE_CHECKING:
    from ..store import Store
    from .trace import IngestOutcome, ReadAhead, TraceData

#: Execution modes of ``--mode`` (the names nsys recipes use).
MODES: tuple[str, ...] = ("none", "concurrent", "dask-futures")

#: File name endings picked up when a directory is expanded (those of ``traceforge.ingest``).
EXPORT_SUFFIXES: tuple[str, ...] = (".sqlite", ".nsys-rep", ".csv")

_GLOB_CHARS = frozenset("*?[")


class BatchError(TraceforgeError, RuntimeError):
    """The batch as a whole cannot run (its workers cannot start)."""

    code = "batch"


class SchedulerUnavailableError(TraceforgeError, ConnectionError):
    """The Dask scheduler given by ``--scheduler`` or ``DASK_SCHEDULER_ADDRESS`` cannot be reached."""

    code = "scheduler_unavailable"


# --------------------------------------------------------------------------------------------------------
# Expanding the user's inputs


@dataclass
class Expansion:
    """The files a batch will process, and the inputs that named no usable file.

    Attributes:
        paths: absolute paths of the files, sorted, each once.
        problems: ``(input, error)`` for every input that cannot be processed, in input order.
    """

    paths: list[str] = field(default_factory=list)
    problems: list[tuple[str, TraceforgeError]] = field(default_factory=list)


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> Expansion:
    """Expand files, directories (recursively) and glob patterns into the files to ingest.

    A directory contributes its ``.sqlite``, ``.nsys-rep`` and ncu ``.csv`` files, recursively, skipping
    hidden entries and a ``.nsys-rep`` whose ``.sqlite`` export lies beside it (the export is that report's
    content). A pattern (``*``, ``?``, ``[``; ``**`` crosses directories) contributes every file it matches;
    a file named explicitly is taken whatever its name. The same file reached twice is listed once.

    Args:
        inputs: what the user typed.

    Returns:
        The files and the problems (missing paths, patterns matching nothing, dangling links, directories
        where an export was expected).
    """
    result = Expansion()
    seen: set[str] = set()

    def add(path: str) -> None:
        absolute = os.path.abspath(path)
        key = os.path.realpath(absolute)
        if key not in seen:
            seen.add(key)
            result.paths.append(absolute)

    for raw in inputs:
        item = os.fspath(raw)
        if os.path.isdir(item) and item.rstrip(os.sep).endswith(EXPORT_SUFFIXES):
            # ``run.sqlite/`` named on the command line: the user meant a file, not a folder of them.
            result.problems.append((item, NotAnExportError("is a directory, not an nsys export", path=item)))
        elif os.path.isdir(item):
            found = 0
            for path in _walk_exports(item, result.problems):
                add(path)
                found += 1
            if not found:
                suffixes = ", ".join(EXPORT_SUFFIXES)
                result.problems.append(
                    (item, InputNotFoundError(f"no {suffixes} file in this directory", path=item))
                )
        elif os.path.isfile(item):
            add(item)
        elif os.path.islink(item):
            result.problems.append((item, _dangling(item)))
        elif _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                result.problems.append((item, InputNotFoundError("no file matches this pattern", path=item)))
            for match in matches:
                if os.path.isfile(match):
                    add(match)
                elif os.path.isdir(match):
                    result.problems.append(
                        (match, NotAnExportError("is a directory, not an nsys export", path=match))
                    )
                else:
                    result.problems.append((match, _dangling(match)))
        else:
            result.problems.append((item, InputNotFoundError("no such file or directory", path=item)))
    result.paths.sort()
    return result


def _walk_exports(root: str, problems: list[tuple[str, TraceforgeError]]) -> Iterator[str]:
    def on_error(exc: OSError) -> None:
        where = exc.filename or root
        problems.append(
            (where, errors.InputPermissionError(f"cannot list directory: {exc.strerror}", path=where))
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in list(dirnames):
            if name.endswith(EXPORT_SUFFIXES):
                where = os.path.join(dirpath, name)
                problems.append((where, NotAnExportError("is a directory, not an nsys export", path=where)))
        present = set(filenames)
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(EXPORT_SUFFIXES):
                continue
            if name.endswith(".nsys-rep") and name[: -len(".nsys-rep")] + ".sqlite" in present:
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not os.path.exists(path):
                problems.append((path, _dangling(path)))
                continue
            yield path


def _dangling(path: str) -> InputNotFoundError:
    try:
        target = os.readlink(path)
    except OSError:
        return InputNotFoundError("no such file", path=path)
    return InputNotFoundError(f"broken symbolic link (its target {target} does not exist)", path=path)


# --------------------------------------------------------------------------------------------------------
# The per-file job (runs in a worker)


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to process one file (picklable).

    Attributes:
        path: the file.
        dataset: the dataset directory the trace's partition goes to.
        known: fingerprints already stored (skipped without reading).
        force: re-read the file even when stored or already partitioned.
        threads: threads of the Rust core; 0 lets the worker size it from ``threads_by_host``.
        threads_by_host: for Dask workers, host name -> concurrent task slots on that host.
    """

    path: str
    dataset: str
    known: frozenset[str] = frozenset()
    force: bool = False
    threads: int = 0
    threads_by_host: tuple[tuple[str, int], ...] = ()


@dataclass
class JobResult:
    """What a worker reports back for one file (picklable; no exception objects cross processes).

    Attributes:
        path: the file.
        status: ``partitioned`` (partition written), ``cached`` (a complete partition was already there),
            ``stored`` (its fingerprint is already in the store), ``loaded`` (written straight into the
            store, ``--mode none``), or ``failed``.
        fingerprint: the content fingerprint, when it could be computed.
        trace_id: the trace id, when known.
        error_code: the ``code`` of the error, when failed.
        message: the error's message (without the path), when failed.
        seconds: time spent in the job.
        worker: which worker ran it (``pid`` or Dask address).
        peak_rss_bytes: the worker process's peak resident memory so far.
        kernel_count: kernels stored, for ``loaded``.
    """

    path: str
    status: str
    fingerprint: str | None = None
    trace_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    seconds: float = 0.0
    worker: str = ""
    peak_rss_bytes: int = 0
    kernel_count: int = 0


def run_job(spec: JobSpec, direct: Store | None = None, read_ahead: ReadAhead | None = None) -> JobResult:
    """Process one file into one partition; never raises (every failure becomes a ``failed`` result).

    The trace is ingested by :func:`traceforge.ingest.write_trace` into a private in-memory DuckDB store (so
    the rows are exactly what a direct ingest stores), then each table's rows are copied out with
    ``COPY ... TO ... (FORMAT parquet)`` into the dataset, published atomically. With ``direct`` (a store
    open in this process), the trace is written into that store instead and no partition is made.
    ``read_ahead``: an export already being read in this process; used if it is this job's file.
    """
    start = time.perf_counter()
    result = JobResult(path=spec.path, status="failed")
    try:
        if spec.path.lower().endswith(".nsys-rep"):
            import tempfile

            from .nsysrep import export_to_sqlite

            with tempfile.TemporaryDirectory(prefix="traceforge-export-") as tmp:
                _job_sqlite(spec, export_to_sqlite(spec.path, tmp), result, direct, None)
        else:
            _job_sqlite(spec, spec.path, result, direct, read_ahead)
    except TraceforgeError as exc:
        result.error_code, result.message = exc.code, exc.message
    except FileNotFoundError as exc:
        result.error_code, result.message = "not_found", exc.strerror or str(exc)
    except PermissionError as exc:
        result.error_code, result.message = "permission", exc.strerror or str(exc)
    except OSError as exc:
        result.error_code, result.message = "io", exc.strerror or str(exc)
    except Exception as exc:  # a bug must cost one file, not the batch
        if errors.is_interruption(exc):
            raise KeyboardInterrupt from exc  # Ctrl-C landed inside a DuckDB query
        result.error_code, result.message = "internal", f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - start
    result.worker, result.peak_rss_bytes = _worker_identity()
    return result


def _job_sqlite(
    spec: JobSpec, export: str, result: JobResult, direct: Store | None, read_ahead: ReadAhead | None
) -> None:
    ahead = read_ahead if read_ahead is not None and read_ahead.covers(export) else None
    try:
        _job_sqlite_read(spec, export, result, direct, ahead)
    finally:
        if ahead is not None:
            ahead.close()  # the content was stored already, or the job failed: stop reading it


def _job_sqlite_read(
    spec: JobSpec, export: str, result: JobResult, direct: Store | None, ahead: ReadAhead | None
) -> None:
    from ..store import Store, dataset
    from .trace import check_input, fingerprint_file, read_trace, trace_id_from_fingerprint, write_trace

    def read(fingerprint: str | None) -> TraceData:
        if ahead is not None:
            return ahead.take(source_path=spec.path)
        return read_trace(export, threads=_job_threads(spec), source_path=spec.path, fingerprint=fingerprint)

    check_input(export)
    if direct is not None and (spec.force or not direct.has_file_size(os.path.getsize(export))):
        # No stored trace can hold this content (none has its size): hash the file while reading it.
        data = read(None)
        result.fingerprint, result.trace_id = data.fingerprint, data.trace_id
        _write_direct(direct, data, spec, result)
        return
    result.fingerprint = ahead.fingerprint() if ahead is not None else fingerprint_file(export)
    result.trace_id = trace_id_from_fingerprint(result.fingerprint)
    if not spec.force and result.fingerprint in spec.known:
        result.status = "stored"
        return
    if direct is not None:
        if not spec.force and direct.has_fingerprint(result.fingerprint):
            result.status = "stored"  # a duplicate earlier in this batch
            return
        _write_direct(direct, read(result.fingerprint), spec, result)
        return
    if not spec.force and dataset.has_partition(spec.dataset, result.trace_id):
        result.status = "cached"
        return
    data = read(result.fingerprint)
    with Store(":memory:") as memory:
        write_trace(memory, data, force=True)
        dataset.export_trace(memory.con, spec.dataset, result.trace_id, overwrite=spec.force)
    result.status = "partitioned"


def _write_direct(store: Store, data: TraceData, spec: JobSpec, result: JobResult) -> None:
    from .trace import write_trace

    outcome = write_trace(store, data, force=spec.force)
    result.status = "loaded" if outcome.status == "ingested" else "stored"
    result.kernel_count = outcome.kernel_count


def _ping() -> int:
    return os.getpid()


def _job_threads(spec: JobSpec) -> int:
    if spec.threads > 0:
        return spec.threads
    address = _dask_worker_address() if spec.threads_by_host else None
    if address is not None:
        slots = dict(spec.threads_by_host).get(_host_of(address), 1)
        return max(1, available_cores() // max(1, slots))
    return 0


def _worker_identity() -> tuple[str, int]:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    address = _dask_worker_address()
    return (address or f"pid {os.getpid()}"), peak


def _dask_worker_address() -> str | None:
    """Return the address of the Dask worker running this task; None outside Dask (never imports it)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def _host_of(address: str) -> str:
    from urllib.parse import urlparse

    return urlparse(address).hostname or address


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------------
# Executors: each turns job specs into results, in completion order


class _InProcess:
    """``--mode none``: the jobs run one after the other in this process.

    Without an ``--output`` dataset there is no one to hand partitions to, so each trace is written straight
    into the store (one transaction, as a plain ingest) instead of through Parquet.
    """

    workers = 1

    def __init__(self, direct: Store | None, read_ahead: ReadAhead | None = None) -> None:
        self.direct = direct
        self.read_ahead = read_ahead

    def results(self, specs: Sequence[JobSpec]) -> Iterator[JobResult]:
        direct = self.direct
        # One trace: checkpoint at its commit rather than log it and write it again at close (Store doc).
        checkpointing = direct.checkpoint_each_commit() if direct is not None and len(specs) == 1 else None
        with checkpointing or contextlib.nullcontext():
            for spec in specs:
                yield run_job(spec, direct=direct, read_ahead=self.read_ahead)

    def close(self) -> None:
        pass


class _ProcessPool:
    """``--mode concurrent``: a local pool of worker processes."""

    def __init__(self, jobs: int) -> None:
        self.workers = jobs

    def results(self, specs: Sequence[JobSpec]) -> Iterator[JobResult]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        # spawn, not fork: the coordinator holds a DuckDB connection and its threads.
        context = multiprocessing.get_context("spawn")
        pending = list(specs)
        attempts: dict[str, int] = {}
        while pending:
            with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
                try:
                    pool.submit(_ping).result()
                except BrokenProcessPool as exc:
                    # Not a file's fault: no worker could even start (e.g. __main__ cannot be re-imported).
                    raise BatchError(
                        "the worker processes could not start; try --mode none (see the log above for why)"
                    ) from exc
                futures = {pool.submit(run_job, spec): spec for spec in pending}
                pending = []
                try:
                    for future in as_completed(futures):
                        spec = futures[future]
                        try:
                            yield future.result()
                        except BrokenProcessPool:
                            # A worker died (crash, out of memory): every job still in the pool is lost.
                            # Retry each once in a fresh pool; a file that breaks it twice is the culprit.
                            attempts[spec.path] = attempts.get(spec.path, 0) + 1
                            if attempts[spec.path] >= 2:
                                yield JobResult(
                                    path=spec.path,
                                    status="failed",
                                    error_code="worker_died",
                                    message="the worker process died while reading this file "
                                    "(crash or out of memory)",
                                )
                            else:
                                pending.append(spec)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise

    def close(self) -> None:
        pass


class _Dask:
    """``--mode dask-futures``: a Dask cluster, existing or started here."""

    def __init__(self, jobs: int, scheduler: str | None) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise SchedulerUnavailableError(
                "--mode dask-futures needs dask[distributed] (pip install 'traceforge[scale]')"
            ) from exc
        self.cluster: Any = None
        address = (
            scheduler
            or os.environ.get("DASK_SCHEDULER_ADDRESS")
            or dask.config.get("scheduler-address", None)
        )
        if address:
            timeout = dask.config.get("distributed.comm.timeouts.connect", "30s")
            try:
                self.client = Client(address, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise SchedulerUnavailableError(
                    f"cannot reach the Dask scheduler at {address} within {timeout}: {_first_line(exc)}"
                ) from exc
        else:
            import logging

            self.cluster = LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)
        info = self.client.scheduler_info()
        slots: dict[str, int] = {}
        for address_, worker in info.get("workers", {}).items():
            host = _host_of(address_)
            slots[host] = slots.get(host, 0) + int(worker.get("nthreads", 1))
        if not slots:
            self.close()
            raise SchedulerUnavailableError(f"the Dask scheduler at {address} has no workers")
        self.slots = tuple(sorted(slots.items()))
        self.workers = sum(slots.values())

    def results(self, specs: Sequence[JobSpec]) -> Iterator[JobResult]:
        from dataclasses import replace

        from distributed import as_completed

        specs = [replace(spec, threads=0, threads_by_host=self.slots) for spec in specs]
        futures = self.client.map(run_job, specs, pure=False)
        by_key = {future.key: spec for future, spec in zip(futures, specs)}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:  # KilledWorker, lost connection: the file failed, not the batch
                    spec = by_key[future.key]
                    yield JobResult(
                        path=spec.path,
                        status="failed",
                        error_code="worker_died",
                        message=f"the Dask worker failed on this file: {_first_line(exc)}",
                    )
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# --------------------------------------------------------------------------------------------------------
# The coordinator


@dataclass
class BatchReport:
    """What a batch did.

    Attributes:
        outcomes: one per file (and per input that named no usable file), in completion order.
        mode: the execution mode used.
        workers: how many jobs ran at once.
        seconds: wall time of the whole batch.
        worker_peak_rss_bytes: per worker, its peak resident memory.
    """

    outcomes: list[IngestOutcome] = field(default_factory=list)
    mode: str = "none"
    workers: int = 1
    seconds: float = 0.0
    worker_peak_rss_bytes: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        """Count the outcomes with this status (``ingested``, ``skipped``, ``failed``)."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failures(self) -> list[IngestOutcome]:
        """The failed outcomes."""
        return [o for o in self.outcomes if o.status == "failed"]


def staging_dir(store: Store) -> str:
    """Where a batch stages partitions when no ``--output`` dataset is given: beside the store file."""
    db = Path(store.path).resolve()
    return str(db.parent / f".{db.name}.staging")


def resolve_mode(mode: str | None, jobs: int) -> str:
    """Pick the execution mode: the one asked for, else ``concurrent`` for several jobs, ``none`` for one."""
    if mode is None:
        return "concurrent" if jobs > 1 else "none"
    if mode not in MODES:
        raise errors.SpecError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "none" and jobs > 1:
        raise errors.SpecError("--mode none runs one job at a time; use --mode concurrent with --jobs")
    return mode


def run_batch(
    store: Store,
    inputs: Iterable[str | os.PathLike[str]],
    *,
    jobs: int = 1,
    mode: str | None = None,
    scheduler: str | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    threads: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[IngestOutcome], None] | None = None,
    read_ahead: ReadAhead | None = None,
) -> BatchReport:
    """Ingest many files: parallel, resumable, skipping stored content; never stops at a bad file.

    Args:
        store: the writable store (the coordinator is its only writer).
        inputs: files, directories and glob patterns.
        jobs: files processed at once (worker processes, or Dask workers of a local cluster).
        mode: ``none``, ``concurrent`` or ``dask-futures``; None picks ``concurrent`` when ``jobs`` > 1.
        scheduler: Dask scheduler address for ``dask-futures`` (else ``DASK_SCHEDULER_ADDRESS``, else a
            ``LocalCluster`` of ``jobs`` workers).
        output: a Parquet dataset directory that keeps every trace's partition; None stages partitions
            beside the store and deletes each once loaded.
        force: re-read files whose content is already stored, replacing their rows and partitions.
        threads: threads of the Rust core per job; None sizes them so jobs x threads = the cores.
        on_start: called once with the number of outcomes to expect.
        on_outcome: called with each outcome as it lands (for progress display).
        read_ahead: one of the files, already being read in this process (``none`` mode writing straight
            into the store uses it; it is closed when the batch ends either way).

    Returns:
        The report; failures are in it and in ``ingest_failures``, never raised.

    Raises:
        SchedulerUnavailableError: the Dask scheduler cannot be reached (before anything was written).
        SpecError: an invalid mode or job count.
    """
    from ..store import dataset

    if jobs < 1:
        raise errors.SpecError(f"--jobs must be at least 1, not {jobs}")
    mode = resolve_mode(mode, jobs)
    started = time.perf_counter()
    expansion = expand_inputs(inputs)
    keep_partitions = output is not None
    root = os.path.abspath(os.fspath(output)) if output is not None else staging_dir(store)
    dataset.ensure_writable(root)
    dataset.repair(root)

    executor: _InProcess | _ProcessPool | _Dask
    if mode == "dask-futures":
        executor = _Dask(jobs, scheduler)
    elif mode == "concurrent":
        executor = _ProcessPool(jobs)
    else:
        executor = _InProcess(None if keep_partitions else store, read_ahead)
    report = BatchReport(mode=mode, workers=executor.workers)
    if on_start is not None:
        on_start(len(expansion.paths) + len(expansion.problems))

    def emit(outcome: IngestOutcome) -> None:
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        for path, error in expansion.problems:
            _record_failure(store, path, None, error)
            emit(_outcome(path, "failed", None, str(error), error))
        known = frozenset(
            str(r[0]) for r in store.con.execute("SELECT fingerprint FROM traces").fetchall() if r[0]
        )
        # ncu CSV exports are small tables of their own (not traces): the coordinator ingests them directly.
        for path in [p for p in expansion.paths if p.lower().endswith(".csv")]:
            emit(_ingest_csv(store, path, force=force))
        if threads is None:
            threads = max(1, available_cores() // executor.workers) if mode != "dask-futures" else 0
        specs = [
            JobSpec(path=p, dataset=root, known=known, force=force, threads=threads)
            for p in expansion.paths
            if not p.lower().endswith(".csv")
        ]
        loader = _Loader(store, root, keep=keep_partitions, emit=emit)
        for result in executor.results(specs):
            if result.worker:
                peak = report.worker_peak_rss_bytes.get(result.worker, 0)
                report.worker_peak_rss_bytes[result.worker] = max(peak, result.peak_rss_bytes)
            outcome = _settle(store, root, result, force=force, keep=keep_partitions, loader=loader)
            if outcome is not None:
                emit(outcome)
        loader.flush()
    except KeyboardInterrupt as exc:
        raise errors.IngestInterrupted(
            "batch interrupted; traces already loaded are kept, run the same command again to finish"
        ) from exc
    finally:
        executor.close()
        if read_ahead is not None:
            read_ahead.close()
        if not keep_partitions:
            _remove_if_empty(root)
    report.seconds = time.perf_counter() - started
    return report


class _Loader:
    """Loads finished partitions into the store, a group of traces per transaction.

    Small traces finish faster than the coordinator could load them one transaction each; grouping the
    partitions that finished close together keeps the one writer from becoming the bottleneck. Every trace
    still lands whole or not at all; a group that fails to load is retried trace by trace so that one bad
    partition costs only its own trace.
    """

    def __init__(
        self,
        store: Store,
        root: str,
        *,
        keep: bool,
        emit: Callable[[IngestOutcome], None],
        max_group: int = 32,
        max_wait_s: float = 1.0,
    ) -> None:
        self.store, self.root, self.keep, self.emit = store, root, keep, emit
        self.max_group, self.max_wait_s = max_group, max_wait_s
        self.pending: list[tuple[JobResult, bool]] = []
        self.first_at = 0.0
        #: trace id -> path of the file whose content was (or is being) loaded in this batch
        self.loaded: dict[str, str] = {}

    def add(self, result: JobResult, *, replace: bool) -> None:
        """Queue one partition; load the queue when it is full or its oldest entry has waited long enough."""
        assert result.trace_id is not None
        if not self.pending:
            self.first_at = time.perf_counter()
        self.pending.append((result, replace))
        self.loaded[result.trace_id] = result.path
        if len(self.pending) >= self.max_group or time.perf_counter() - self.first_at >= self.max_wait_s:
            self.flush()

    def is_pending(self, trace_id: str) -> bool:
        """Whether this trace's partition is queued and not loaded yet."""
        return any(result.trace_id == trace_id for result, _ in self.pending)

    def flush(self) -> None:
        """Load every queued partition."""
        from ..store import dataset

        group, self.pending = self.pending, []
        if not group:
            return
        items = [(r.trace_id or "", r.path, replace) for r, replace in group]
        try:
            counts = dataset.load_partitions(self.store, self.root, items)
        except TraceforgeError:
            if len(group) > 1:
                for one in group:
                    self.pending = [one]
                    self.flush()
                return
            result = group[0][0]
            error = sys.exc_info()[1]
            assert isinstance(error, TraceforgeError)
            self.loaded.pop(result.trace_id or "", None)
            _record_failure(self.store, result.path, result.fingerprint, error)
            self.emit(_outcome(result.path, "failed", result.trace_id, error.message, error, result.seconds))
            return
        self.store.con.execute(
            bind(
                "DELETE FROM ingest_failures WHERE path IN (SELECT unnest($paths))",
                {"paths": [r.path for r, _ in group]},
            ),
        )
        for result, _replace in group:
            assert result.trace_id is not None
            if not self.keep:
                dataset.remove_partition(self.root, result.trace_id)
            kernels = counts[result.trace_id]
            note = " (partition from an earlier run)" if result.status == "cached" else ""
            self.emit(
                _outcome(
                    result.path,
                    "ingested",
                    result.trace_id,
                    f"{kernels} kernels{note}",
                    None,
                    result.seconds,
                    kernels,
                )
            )


def _settle(
    store: Store, root: str, result: JobResult, *, force: bool, keep: bool, loader: _Loader
) -> IngestOutcome | None:
    """Turn one job result into an outcome, or queue its partition for loading (returns None)."""
    from ..store import dataset

    if result.status == "failed":
        error = _error_from(result)
        _record_failure(store, result.path, result.fingerprint, error)
        return _outcome(result.path, "failed", result.trace_id, error.message, error, result.seconds)
    assert result.trace_id is not None and result.fingerprint is not None
    if result.status == "loaded":
        loader.loaded[result.trace_id] = result.path
        store.con.execute(bind("DELETE FROM ingest_failures WHERE path = ?", [result.path]))
        message = f"{result.kernel_count} kernels"
        return _outcome(
            result.path, "ingested", result.trace_id, message, None, result.seconds, result.kernel_count
        )
    in_batch = loader.loaded.get(result.trace_id)
    stored_as = in_batch or _stored_source(store, result.fingerprint)
    if stored_as is not None and (in_batch is not None or not force):
        # Stored before this batch, or earlier in it under another name: same content, same trace.
        if not keep and result.status != "stored" and not loader.is_pending(result.trace_id):
            dataset.remove_partition(root, result.trace_id)
        elif keep and in_batch is None and not dataset.has_partition(root, result.trace_id):
            # The store has it but the user's dataset does not: copy it over rather than re-read the file.
            dataset.export_trace(store.con, root, result.trace_id)
        same = "" if os.path.abspath(stored_as) == result.path else f" as {stored_as}"
        message = f"already stored{same} (trace {result.trace_id})"
        return _outcome(result.path, "skipped", result.trace_id, message, None, result.seconds)
    loader.add(result, replace=stored_as is not None)
    return None


def _ingest_csv(store: Store, path: str, *, force: bool) -> IngestOutcome:
    from .trace import ingest_file

    try:
        outcome = ingest_file(store, path, force=force)
    except TraceforgeError as exc:
        _record_failure(store, path, None, exc)
        return _outcome(path, "failed", None, exc.message, exc)
    if outcome.status != "failed":
        store.con.execute(bind("DELETE FROM ingest_failures WHERE path = ?", [path]))
    return outcome


def _stored_source(store: Store, fingerprint: str) -> str | None:
    row = store.con.execute(
        bind("SELECT coalesce(source_path, trace_id) FROM traces WHERE fingerprint = ?", [fingerprint])
    ).fetchone()
    return None if row is None else str(row[0])


def _error_from(result: JobResult) -> TraceforgeError:
    """Rebuild a worker's error as the matching traceforge exception class."""
    message = result.message or "unknown error"
    if result.error_code == "not_found":
        message = f"vanished during the batch ({message})"
    cls = _error_classes().get(result.error_code or "", TraceforgeError)
    error = cls(message, path=result.path)
    if cls is TraceforgeError and result.error_code:
        error.code = result.error_code
    return error


def _error_classes() -> dict[str, type[TraceforgeError]]:
    classes: dict[str, type[TraceforgeError]] = {}
    todo: list[type[TraceforgeError]] = [TraceforgeError]
    while todo:
        cls = todo.pop()
        classes.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return classes


def _record_failure(store: Store, path: str, fingerprint: str | None, error: TraceforgeError) -> None:
    with store.transaction() as con:
        con.execute(bind("DELETE FROM ingest_failures WHERE path = ?", [path]))
        con.execute(
            bind(
                "INSERT INTO ingest_failures (path, fingerprint, error_code, message, failed_at) "
                "VALUES (?, ?, ?, ?, now()::TIMESTAMP)",
                [path, fingerprint, error.code, error.message],
            ),
        )


def _outcome(
    path: str,
    status: str,
    trace_id: str | None,
    message: str,
    error: TraceforgeError | None,
    seconds: float = 0.0,
    kernel_count: int = 0,
) -> IngestOutcome:
    from .trace import IngestOutcome

    return IngestOutcome(
        path=path,
        status=status,
        trace_id=trace_id,
        message=message,
        error=error,
        kernel_count=kernel_count,
        seconds=seconds,
    )


def _remove_if_empty(root: str) -> None:
    """Delete the staging dataset once nothing is left in it but empty table directories."""
    base = Path(root)
    if not base.is_dir():
        return
    for _dirpath, _dirnames, filenames in os.walk(base):
        if any(name.endswith(".parquet") for name in filenames):
            return
    shutil.rmtree(base, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------------
# Re-analysis


@dataclass
class ReanalyzeOutcome:
    """The result of recomputing one stored trace's derived metrics.

    Attributes:
        trace_id: the trace.
        status: ``recomputed`` or ``failed``.
        previous_version: its ``metric_version`` before.
        message: a one-line note or the error.
        seconds: time taken.
    """

    trace_id: str
    status: str
    previous_version: int | None
    message: str
    seconds: float


def stale_traces(
    store: Store, *, everything: bool = False, trace_ids: Sequence[str] | None = None
) -> list[str]:
    """Trace ids whose derived rows need recomputing.

    Args:
        store: the store.
        everything: all stored traces, whatever their metric version.
        trace_ids: only these (each must be stored).

    Returns:
        The ids, oldest metric version first.
    """
    from ..store.schema import METRIC_VERSION

    rows = store.con.execute(
        "SELECT trace_id, metric_version FROM traces ORDER BY metric_version NULLS FIRST, trace_id"
    ).fetchall()
    if trace_ids is not None:
        stored = {str(r[0]) for r in rows}
        missing = [t for t in trace_ids if t not in stored]
        if missing:
            raise errors.QueryError(f"no such trace in the store: {', '.join(missing)}", path=store.path)
        wanted = set(trace_ids)
        return [str(r[0]) for r in rows if r[0] in wanted]
    return [str(r[0]) for r in rows if everything or r[1] is None or int(r[1]) != METRIC_VERSION]


def reanalyze(
    store: Store,
    trace_ids: Sequence[str],
    *,
    on_outcome: Callable[[ReanalyzeOutcome], None] | None = None,
) -> list[ReanalyzeOutcome]:
    """Recompute the derived tables of stored traces from their stored events (no export files needed).

    Each trace is one transaction: its derived rows are replaced and ``traces.metric_version`` set, or
    nothing changes. A failure is reported and the next trace done.

    Args:
        store: the writable store.
        trace_ids: the traces to recompute (see :func:`stale_traces`).
        on_outcome: called after each trace.

    Returns:
        One outcome per trace.
    """
    import duckdb

    from ..store.schema import METRIC_VERSION
    from .trace import recompute_metrics

    outcomes = []
    for trace_id in trace_ids:
        start = time.perf_counter()
        row = store.con.execute(
            bind("SELECT metric_version FROM traces WHERE trace_id = ?", [trace_id])
        ).fetchone()
        previous = None if row is None or row[0] is None else int(row[0])
        try:
            with store.transaction() as con:
                recompute_metrics(store, trace_id)
                con.execute(
                    bind(
                        "UPDATE traces SET metric_version = ? WHERE trace_id = ?", [METRIC_VERSION, trace_id]
                    )
                )
            outcome = ReanalyzeOutcome(
                trace_id,
                "recomputed",
                previous,
                f"metric version {previous} -> {METRIC_VERSION}",
                time.perf_counter() - start,
            )
        except (TraceforgeError, duckdb.Error) as exc:
            outcome = ReanalyzeOutcome(
                trace_id, "failed", previous, _first_line(exc), time.perf_counter() - start
            )
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes
