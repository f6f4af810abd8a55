"""Parallel ingest of trace archives: worker processes or Dask, resumable, idempotent.

DuckDB allows one writer, so the expensive per-file work runs elsewhere and only the cheap load is serial:

* a **job** (:func:`run_job`, in a worker process or a Dask worker) fingerprints one file, skips it when that
  content is already stored, otherwise reads it with the Rust core into a private in-memory store and
  writes the trace as one hive partition of the staging dataset beside the store, in the store's own form
  (:func:`traceforge.store.dataset.stage_trace`), and also in the public form into the user's ``--output``
  dataset when one is given;
* the **coordinator** (:class:`Batch`, in the calling process, run by :func:`traceforge.ingest.run`) loads
  the staged partitions into the store (those that finish close together share one transaction; each
  trace lands whole or not at all), records each failure with its reason in ``ingest_failures``, and never
  lets one file stop the others. Loading the storage form is a plain copy, so the one writer keeps up with
  many workers; the public form would make it re-derive every row's class ids.

Every trace lands atomically and is one partition, so a batch killed at any point and started again does the
rest without duplicates: stored fingerprints are skipped, and partitions finished by the killed run are loaded
without reading their file again. Execution modes follow the vocabulary of nsys recipes: ``none`` (in this
process; it comes here only with ``--output``, otherwise ``traceforge.ingest.run`` reads and writes each
trace itself), ``concurrent`` (a local process pool), ``dask-futures`` (a Dask cluster:
``--scheduler ADDRESS``, ``DASK_SCHEDULER_ADDRESS``, or a ``LocalCluster`` started here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchError, SchedulerUnavailableError, TraceforgeError, class_for_code
from .failures import clear_failures, record_failure

if TYPE_CHECKING:
    from ..store import Store
    from .trace import IngestOutcome


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to process one file (picklable).

    Attributes:
        path: the file.
        staging: the staging dataset the trace's storage-form partition goes to.
        dataset: the user's ``--output`` dataset (public form), or None.
        known: fingerprints already stored (skipped without reading).
        force: re-read the file even when stored or already partitioned.
        threads: threads of the Rust core; 0 lets the worker size it from ``threads_by_host``.
        threads_by_host: for Dask workers, host name -> concurrent task slots on that host.
    """

    path: str
    staging: str
    dataset: str | None = None
    known: frozenset[str] = frozenset()
    force: bool = False
    threads: int = 0
    threads_by_host: tuple[tuple[str, int], ...] = ()


@dataclass
class JobResult:
    """What a worker reports back for one file (picklable; no exception objects cross processes).

    Attributes:
        path: the file.
        status: ``partitioned`` (partition written), ``cached`` (a complete partition was already there:
            staged by an earlier run, or kept in the ``--output`` dataset and staged from it),
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


def run_job(spec: JobSpec) -> JobResult:
    """Process one file into one staged partition; never raises (every failure becomes a ``failed`` result).

    The trace is ingested by :func:`traceforge.ingest.trace.write_trace` into a private in-memory DuckDB
    store (so the rows are exactly what a direct ingest stores), then each of its tables is copied out with
    ``COPY ... TO ... (FORMAT parquet)``: in the storage form into the staging dataset, and in the public
    form into the ``--output`` dataset; each partition is published atomically.
    """
    from .failures import as_error, for_report

    start = time.perf_counter()
    result = JobResult(path=spec.path, status="failed")
    export: str | None = None
    temporary = False
    try:
        if spec.path.lower().endswith(".nsys-rep"):
            import tempfile

            from .nsysrep import export_beside, export_to_sqlite

            export = export_beside(spec.path)
            if export is not None:  # the report's export lies beside it: no nsys needed
                _job_sqlite(spec, export, result)
            else:
                with tempfile.TemporaryDirectory(prefix="traceforge-export-") as tmp:
                    export = export_to_sqlite(spec.path, tmp)
                    temporary = True
                    _job_sqlite(spec, export, result)
        else:
            _job_sqlite(spec, spec.path, result)
    except Exception as exc:  # a bug must cost one file, not the batch (as_error re-raises Ctrl-C)
        error = as_error(exc, spec.path, listed=False)
        if export is not None:
            error = for_report(error, spec.path, export, temporary=temporary)
        result.error_code, result.message = error.code, error.message
    result.seconds = time.perf_counter() - start
    result.worker, result.peak_rss_bytes = _worker_identity()
    return result


def _job_sqlite(spec: JobSpec, export: str, result: JobResult) -> None:
    from ..store import Store, dataset
    from .inputs import check_input, file_identity
    from .trace import fingerprint_file, read_trace, trace_id_from_fingerprint, write_trace

    check_input(export)
    identity = file_identity(export)  # before hashing: a file changed since is refused at the commit
    result.fingerprint = fingerprint_file(export)
    result.trace_id = trace_id_from_fingerprint(result.fingerprint)
    if not spec.force and result.fingerprint in spec.known:
        result.status = "stored"
        return
    if not spec.force and dataset.has_partition(spec.staging, result.trace_id):
        result.status = "cached"
        return
    with Store(":memory:") as memory:
        threads = _job_threads(spec)
        if threads > 0:
            # The job's share of the cores for DuckDB too (its insert and its Parquet copies): each of 16
            # workers on 16 cores ran a DuckDB thread per core, 16 times the host's threads.
            memory.con.execute(f"SET threads = {threads}")
        if (
            not spec.force
            and spec.dataset is not None
            and dataset.has_partition(spec.dataset, result.trace_id)
        ):
            # Kept in the user's dataset by an earlier run: staged from there, the file is not read again.
            dataset.load_partition(memory, spec.dataset, result.trace_id)
            result.status = "cached"
        else:
            data = read_trace(
                export,
                threads=threads,
                source_path=spec.path,
                fingerprint=result.fingerprint,
                identity=identity,
            )
            write_trace(memory, data, force=True)
            if spec.dataset is not None:
                dataset.export_trace(memory.con, spec.dataset, result.trace_id, overwrite=spec.force)
            result.status = "partitioned"
        dataset.stage_trace(memory.con, spec.staging, result.trace_id, overwrite=spec.force)


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
    """``--mode none`` with an ``--output`` dataset: the jobs run one after the other in this process.

    (Without ``--output``, :func:`traceforge.ingest.run` reads and writes each trace itself: no jobs.)
    """

    workers = 1

    def results(self, specs: Sequence[JobSpec]) -> Iterator[JobResult]:
        for spec in specs:
            yield run_job(spec)

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


#: Seconds to open a TCP connection to a Dask scheduler, and (``$TRACEFORGE_DASK_TIMEOUT``, a Dask
#: duration) for its handshake once connected: an unreachable scheduler fails in seconds, not Dask's 30.
SCHEDULER_CONNECT_S = 2.0
SCHEDULER_TIMEOUT_ENV = "TRACEFORGE_DASK_TIMEOUT"
DEFAULT_SCHEDULER_TIMEOUT_S = 5.0


def _probe_scheduler(address: str) -> None:
    """Fail fast, in one line, when nothing accepts connections at a Dask scheduler's address.

    Dask's client retries a refused or silent address until its connect timeout (30 s by default); one
    plain TCP connection attempt tells within ``SCHEDULER_CONNECT_S``. Addresses that are not TCP
    (``inproc://``, ``ucx://``) are left to Dask.
    """
    import socket
    from urllib.parse import urlparse

    url = urlparse(address if "://" in address else f"tcp://{address}")
    if url.scheme not in ("tcp", "tls") or not url.hostname:
        return
    port = url.port or 8786
    try:
        with socket.create_connection((url.hostname, port), timeout=SCHEDULER_CONNECT_S):
            return
    except TimeoutError:
        why = f"no answer within {SCHEDULER_CONNECT_S:g} s"
    except ConnectionRefusedError:
        why = "connection refused: nothing listens there"
    except OSError as exc:
        why = exc.strerror or str(exc)
    raise SchedulerUnavailableError(
        f"cannot reach the Dask scheduler at {address} ({why}); start one with `dask scheduler`, or fix "
        "--scheduler / DASK_SCHEDULER_ADDRESS"
    )


def _client_within(client_class: Any, address: str, timeout: str) -> Any:
    """A Dask ``Client`` of ``address``, or one line when the handshake has not finished in ``timeout``.

    Dask's own ``timeout`` does not bound a peer that accepts the connection and never answers (it waited
    until the peer hung up), so the client is made on a daemon thread and waited for here.
    """
    import threading

    from dask.utils import parse_timedelta

    seconds = float(parse_timedelta(timeout, default="seconds") or DEFAULT_SCHEDULER_TIMEOUT_S)
    made: dict[str, Any] = {}

    def connect() -> None:
        try:
            made["client"] = client_class(address, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - reported below, in this thread's caller
            made["error"] = exc

    thread = threading.Thread(target=connect, name="traceforge-dask-connect", daemon=True)
    thread.start()
    thread.join(seconds + 1.0)
    hint = "(is it a Dask scheduler? `dask scheduler` prints its address)"
    if thread.is_alive():
        raise SchedulerUnavailableError(
            f"cannot reach the Dask scheduler at {address}: it accepted the connection but did not answer "
            f"within {timeout} {hint}"
        )
    if "error" in made:
        exc = made["error"]
        if isinstance(exc, (OSError, TimeoutError)):
            raise SchedulerUnavailableError(
                f"cannot reach the Dask scheduler at {address} within {timeout}: {_first_line(exc)} {hint}"
            ) from exc
        raise exc
    return made["client"]


def all_workers_info(client: Any) -> dict[str, Any]:
    """The scheduler's description of every worker.

    ``Client.scheduler_info()`` lists only 5 workers by default in distributed 2025.x (its ``n_workers``
    argument, -1 for all; later releases made -1 the default): a 16-worker cluster was counted as 5 slots,
    so each task got the threads of a third of the host. Older releases have no such argument.
    """
    try:
        return dict(client.scheduler_info(n_workers=-1))
    except TypeError:
        return dict(client.scheduler_info())


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
            _probe_scheduler(str(address))
            # Something answers there: give the Dask handshake a few seconds, not Dask's 30 s default.
            timeout = os.environ.get(SCHEDULER_TIMEOUT_ENV, f"{DEFAULT_SCHEDULER_TIMEOUT_S:g}s")
            self.client = _client_within(Client, str(address), timeout)
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
        info = all_workers_info(self.client)
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


def staging_dir(store: Store) -> str:
    """Where a batch stages partitions: beside the store file, in a folder named for the store's layout.

    Staged partitions hold the store's own form, which only a build of the same layout may load; one
    left by a killed batch of another build is in another folder and never loaded.
    """
    from ..store.storage import layout_digest

    db = Path(store.path).resolve()
    return str(db.parent / f".{db.name}.staging" / f"layout-{layout_digest()}")


class Batch:
    """The coordinator of a partitioned ingest: jobs in workers, their partitions loaded into the store.

    Created before anything is written (so an unreachable scheduler fails first), used once by
    :meth:`run`, then :meth:`close` d.

    Args:
        store: the writable store (the coordinator is its only writer).
        mode: ``none`` (only with ``output``), ``concurrent`` or ``dask-futures``.
        jobs: files processed at once (worker processes, or Dask workers of a local cluster).
        scheduler: Dask scheduler address for ``dask-futures`` (else ``DASK_SCHEDULER_ADDRESS``, else a
            ``LocalCluster`` of ``jobs`` workers).
        output: a Parquet dataset directory that keeps every trace's partition (public form); None keeps
            none. Either way partitions are staged beside the store and each deleted once loaded.

    Raises:
        SchedulerUnavailableError: the Dask scheduler cannot be reached.
    """

    def __init__(
        self, store: Store, *, mode: str, jobs: int, scheduler: str | None, output: str | None
    ) -> None:
        from ..store import dataset

        self.store, self.mode = store, mode
        self.output = os.path.abspath(output) if output is not None else None
        self.staging = staging_dir(store)
        for root in (self.staging, self.output):
            if root is not None:
                dataset.ensure_writable(root)
                dataset.repair(root)
        self.executor: _InProcess | _ProcessPool | _Dask
        if mode == "dask-futures":
            self.executor = _Dask(jobs, scheduler)
        elif mode == "concurrent":
            self.executor = _ProcessPool(jobs)
        else:
            self.executor = _InProcess()
        self.workers = self.executor.workers
        #: per worker, its peak resident memory
        self.worker_peak_rss_bytes: dict[str, int] = {}
        #: wall seconds during which at least one load into the store was running (the one writer's share)
        self.load_busy_s = 0.0

    def run(
        self,
        paths: Sequence[str],
        emit: Callable[[IngestOutcome], None],
        *,
        force: bool,
        threads: int | None,
    ) -> None:
        """Process the exports and reports ``paths``, emitting one outcome per file as each settles.

        Args:
            paths: absolute paths of the files (no ncu CSV).
            emit: receives each outcome.
            force: re-read files whose content is already stored, replacing their rows and partitions.
            threads: threads of the Rust core per job; None sizes them so jobs x threads = the cores.
        """
        store = self.store
        known = frozenset(
            str(r[0]) for r in store.con.execute("SELECT fingerprint FROM traces").fetchall() if r[0]
        )
        if threads is None:
            threads = max(1, available_cores() // self.workers) if self.mode != "dask-futures" else 0
        specs = [
            JobSpec(
                path=p, staging=self.staging, dataset=self.output, known=known, force=force, threads=threads
            )
            for p in paths
        ]
        loader = _Loader(
            store, self.staging, output=self.output, emit=emit, loaders=loaders_for(self.workers)
        )
        try:
            self._collect(specs, loader, force=force)
        finally:
            loader.close()
            self.load_busy_s = loader.busy_s()

    def _collect(self, specs: Sequence[JobSpec], loader: _Loader, *, force: bool) -> None:
        store = self.store
        # Each spec gets exactly one result (a job lost with its worker is retried, then reported once).
        left = len(specs)
        for result in self.executor.results(specs):
            left -= 1
            if result.worker:
                peak = self.worker_peak_rss_bytes.get(result.worker, 0)
                self.worker_peak_rss_bytes[result.worker] = max(peak, result.peak_rss_bytes)
            outcome = _settle(store, result, force=force, loader=loader)
            if outcome is not None:
                loader.emit(outcome)
            if left == 0:
                # The last result: its group loads now, while the executor winds its workers down (a
                # process pool joins each worker as it exits, ~0.1-0.5 s for 16 of them).
                loader.flush(wait=False)
            elif store.release_between_traces and not loader.busy:
                # Free for readers who want it until the next result needs it (queued partitions are
                # files on disk, loaded at the next result or the end, as before).
                store.share()
        loader.flush()

    def close(self) -> None:
        """Stop the workers; delete the staging dataset when nothing is left in it."""
        self.executor.close()
        _remove_if_empty(self.staging)
        with contextlib.suppress(OSError):  # the folder of all layouts' staging, once none is left
            os.rmdir(os.path.dirname(self.staging))


def loaders_for(workers: int) -> int:
    """How many loads into the store run at once: ``$TRACEFORGE_LOADERS``, else up to 4 (at most the workers).

    DuckDB appends of separate transactions (one connection each, in this process) run side by side and
    commit without conflict, since each group's rows are its own traces'; on 16 cores one loader was the
    bottleneck of a batch (loading 52-58% of the wall time at 8 and 16 workers). Measured there (64 real
    exports, Dec 2026): 4 loaders gave 11.58 files/s against 10.77 at 8 workers and 12.06 against 11.50 at
    16. Automatic checkpoints are off while loads run side by side (see ``_NO_AUTO_CHECKPOINT``).
    """
    explicit = os.environ.get(LOADERS_ENV, "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return min(int(explicit), max(1, workers))
    return min(DEFAULT_LOADERS, max(1, workers))


#: Loads side by side when ``$TRACEFORGE_LOADERS`` is not set (``loaders_for``).
DEFAULT_LOADERS = 4


#: Environment variable setting how many loads into the store run at once (``loaders_for``).
LOADERS_ENV = "TRACEFORGE_LOADERS"

#: ``checkpoint_threshold`` while loads run side by side: large enough that no commit checkpoints.
_NO_AUTO_CHECKPOINT = "1000TB"


class _Loader:
    """Loads staged partitions into the store, a group of traces per transaction, up to ``loaders`` at once.

    Small traces finish faster than the coordinator could load them one transaction each; grouping the
    partitions that finished close together keeps the one writer from becoming the bottleneck. Every trace
    still lands whole or not at all; a group that fails to load is retried trace by trace so that one bad
    partition costs only its own trace. With ``loaders`` > 1, groups load on threads of their own (a DuckDB
    connection each, ``Store.con.cursor()``); what follows a load (outcomes, failure rows, removing the
    staged partition) is done here, in the calling thread, in the order the groups were queued.
    """

    def __init__(
        self,
        store: Store,
        staging: str,
        *,
        output: str | None,
        emit: Callable[[IngestOutcome], None],
        max_group: int = 32,
        max_wait_s: float = 1.0,
        loaders: int = 1,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store, self.staging, self.output, self.emit = store, staging, output, emit
        self.max_group, self.max_wait_s = max_group, max_wait_s
        self.pending: list[tuple[JobResult, bool]] = []
        self.first_at = 0.0
        #: trace id -> path of the file whose content was (or is being) loaded in this batch
        self.loaded: dict[str, str] = {}
        self.loaders = max(1, loaders)
        self._pool = (
            ThreadPoolExecutor(max_workers=self.loaders, thread_name_prefix="traceforge-load")
            if self.loaders > 1
            else None
        )
        #: groups being loaded on the pool, oldest first, with their futures
        self._inflight: list[tuple[list[tuple[JobResult, bool]], Future[dict[str, int]]]] = []
        #: (start, end) of every load, for busy_s
        self._spans: list[tuple[float, float]] = []
        #: the store's checkpoint_threshold before parallel loads turned automatic checkpoints off (then
        #: it is restored, and one checkpoint made, at close); None while they are on
        self._threshold_before: str | None = None

    @property
    def busy(self) -> bool:
        """Whether a load is running on the pool."""
        return bool(self._inflight)

    def busy_s(self) -> float:
        """Wall seconds during which at least one load was running."""
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self._spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def add(self, result: JobResult, *, replace: bool) -> None:
        """Queue one partition; load the queue when it is full or its oldest entry has waited long enough."""
        assert result.trace_id is not None
        if not self.pending:
            self.first_at = time.perf_counter()
        self.pending.append((result, replace))
        self.loaded[result.trace_id] = result.path
        if len(self.pending) >= self.max_group or time.perf_counter() - self.first_at >= self.max_wait_s:
            self.flush(wait=False)
        self._reap()

    def is_pending(self, trace_id: str) -> bool:
        """Whether this trace's partition is queued or being loaded, and not loaded yet."""
        groups = [self.pending, *(group for group, _ in self._inflight)]
        return any(result.trace_id == trace_id for group in groups for result, _ in group)

    def flush(self, *, wait: bool = True) -> None:
        """Load every queued partition; ``wait``: also wait for every load in flight, and settle them."""
        group, self.pending = self.pending, []
        if group:
            if self._pool is None:
                self._settle_group(group, self._run(group, None))
            else:
                while len(self._inflight) >= self.loaders:
                    self._settle_oldest()
                # The cursor is made here: only this thread opens (or reopens) the store's connection.
                con = self.store.con
                # No automatic checkpoint while loads run side by side: a commit that checkpoints waits
                # for every table's readers to finish while holding the GIL, and a load whose query has
                # finished needs the GIL to let go of its table (a deadlock, seen with 4 loaders). One
                # checkpoint is made at close instead. (Set again each time: a reopened store forgets it.)
                if self._threshold_before is None:
                    row = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
                    self._threshold_before = str(row[0]) if row else ""
                con.execute(f"SET checkpoint_threshold = '{_NO_AUTO_CHECKPOINT}'")
                cursor = con.cursor()
                self._inflight.append((group, self._pool.submit(self._run_on_cursor, group, cursor)))
        if wait:
            while self._inflight:
                self._settle_oldest()

    def close(self) -> None:
        """Wait for the loads in flight (their rows land or not, whole), stop the pool, checkpoint once."""
        try:
            while self._inflight:
                self._settle_oldest()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        if self._threshold_before is not None:
            before, self._threshold_before = self._threshold_before, None
            con = self.store.con
            con.execute(f"SET checkpoint_threshold = '{before}'" if before else "RESET checkpoint_threshold")
            con.execute("CHECKPOINT")

    def _reap(self) -> None:
        """Settle the groups whose loads have finished, oldest first."""
        while self._inflight and self._inflight[0][1].done():
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        group, future = self._inflight.pop(0)
        try:
            counts = future.result()
        except TraceforgeError as exc:
            self._settle_group(group, exc)
            return
        self._settle_group(group, counts)

    def _run_on_cursor(self, group: list[tuple[JobResult, bool]], con: Any) -> dict[str, int]:
        # A connection of its own: a DuckDB connection is not used by two threads at once.
        try:
            result = self._run(group, con)
        finally:
            con.close()
        if isinstance(result, TraceforgeError):
            raise result
        return result

    def _run(self, group: list[tuple[JobResult, bool]], con: Any) -> dict[str, int] | TraceforgeError:
        """Load one group; the error instead of raising it (the caller settles both the same way)."""
        from ..store import dataset

        items = [(r.trace_id or "", r.path, replace) for r, replace in group]
        start = time.perf_counter()
        try:
            return dataset.load_staged(self.store, self.staging, items, con=con)
        except TraceforgeError as exc:
            return exc
        finally:
            self._spans.append((start, time.perf_counter()))

    def _settle_group(
        self, group: list[tuple[JobResult, bool]], loaded: dict[str, int] | TraceforgeError
    ) -> None:
        """Report one group's outcomes; a failed group is loaded again trace by trace, here."""
        from ..store import dataset

        if isinstance(loaded, TraceforgeError):
            if len(group) > 1:
                for one in group:
                    self._settle_group([one], self._run([one], None))
                return
            result = group[0][0]
            self.loaded.pop(result.trace_id or "", None)
            record_failure(self.store, result.path, result.fingerprint, loaded)
            self.emit(
                _outcome(result.path, "failed", result.trace_id, loaded.message, loaded, result.seconds)
            )
            return
        clear_failures(self.store, [r.path for r, _ in group])
        notes = _graph_notes(self.store, [r.trace_id or "" for r, _ in group])
        for result, _replace in group:
            assert result.trace_id is not None
            dataset.remove_partition(self.staging, result.trace_id)
            if self.output is not None and not dataset.has_partition(self.output, result.trace_id):
                # Staged by an earlier run without --output (or the user removed it): written from the store.
                dataset.export_trace(self.store.con, self.output, result.trace_id)
            kernels = loaded[result.trace_id]
            note = " (partition from an earlier run)" if result.status == "cached" else ""
            outcome = _outcome(
                result.path,
                "ingested",
                result.trace_id,
                f"{kernels} kernels{note}",
                None,
                result.seconds,
                kernels,
            )
            outcome.notes = notes.get(result.trace_id, [])
            self.emit(outcome)


def _settle(store: Store, result: JobResult, *, force: bool, loader: _Loader) -> IngestOutcome | None:
    """Turn one job result into an outcome, or queue its partition for loading (returns None)."""
    from ..store import dataset
    from .trace import already_stored, stored_source

    if result.status == "failed":
        error = _error_from(result)
        record_failure(store, result.path, result.fingerprint, error)
        return _outcome(result.path, "failed", result.trace_id, error.message, error, result.seconds)
    assert result.trace_id is not None and result.fingerprint is not None
    in_batch = loader.loaded.get(result.trace_id)
    stored_as = in_batch or stored_source(store, result.fingerprint)
    if stored_as is not None and (in_batch is not None or not force):
        # Stored before this batch, or earlier in it under another name: same content, same trace.
        if result.status != "stored" and not loader.is_pending(result.trace_id):
            dataset.remove_partition(loader.staging, result.trace_id)
        output = loader.output
        if output is not None and in_batch is None and not dataset.has_partition(output, result.trace_id):
            # The store has it but the user's dataset does not: copy it over rather than re-read the file.
            dataset.export_trace(store.con, output, result.trace_id)
        message = already_stored(result.path, stored_as, result.trace_id)
        return _outcome(result.path, "skipped", result.trace_id, message, None, result.seconds)
    loader.add(result, replace=stored_as is not None)
    return None


def _error_from(result: JobResult) -> TraceforgeError:
    """Rebuild a worker's error as the matching traceforge exception class."""
    message = result.message or "unknown error"
    if result.error_code == "not_found" and not os.path.lexists(result.path):
        message = f"vanished during the batch ({message})"
    cls = class_for_code(result.error_code or "")
    error = cls(message, path=result.path)
    if cls is TraceforgeError and result.error_code:
        error.code = result.error_code
    return error


def _graph_notes(store: Store, trace_ids: Sequence[str]) -> dict[str, list[str]]:
    """The graph-mode line of each loaded trace (see :func:`traceforge.ingest.trace.graph_mode_note`).

    One query for a whole group: a query a trace cost the coordinator ~6 ms each (0.4 s of a 64-file
    batch, after the workers were done).
    """
    from ..store.sql_params import bind
    from .trace import graph_mode_note

    rows = store.con.execute(
        bind(
            "SELECT t.trace_id, t.cuda_graph_trace, (SELECT count(*) FROM graph_launches g "
            "WHERE g.trace_id = t.trace_id AND g.kernel_count IS NULL) "
            "FROM traces t WHERE t.trace_id IN (SELECT unnest($ids))",
            {"ids": list(trace_ids)},
        )
    ).fetchall()
    notes = {str(tid): graph_mode_note(mode, int(count)) for tid, mode, count in rows}
    return {tid: [note] for tid, note in notes.items() if note}


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
