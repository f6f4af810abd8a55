"""Scale-out of batch ingest: files/s with --jobs 1/4/8/16 and --mode dask-futures on real-shaped archives.

Made to run standalone on a GPU host (16 cores, Python 3.12, no network) with only the traceforge wheel and
its dependencies installed with ``pip install --target DIR`` and ``DIR`` on ``PYTHONPATH``: it needs neither
this repository nor the ``dask`` command on ``PATH`` (the scheduler and workers are started as
``python -m distributed.cli.dask_scheduler`` / ``dask_worker``).

The archive (``--archive DIR`` takes an existing one; otherwise it is built in ``--workdir``): ``--files``
exports, copies of the real nsys 2025.3 captures found in ``--fixtures`` (``$TRACEFORGE_FIXTURES``, else the
repository's ``tests/data``, else the capture bundled in the wheel), each with one kernel row moved by its
copy number so that every file has a distinct fingerprint; ``--synth N`` adds N exports from
``traceforge synth`` (``--synth-kernels`` each, GIL ranges, OS calls and GPU metrics included).

Each configuration runs in its own subprocess on a fresh store, so its memory is its own:

* ``jobs1``: ``--jobs 1`` (the plain in-process ingest), the baseline of the speed-ups;
* ``jobsN``: ``--jobs N --mode concurrent`` (a local process pool) for each N of ``--jobs``;
* ``daskN``: ``--mode dask-futures`` against ``--scheduler ADDRESS`` (N = its worker slots), or against a
  ``dask scheduler`` + ``dask worker --nworkers N --nthreads 1`` pair of processes started here with
  ``--start-cluster N``.

Prints one table: files, ingested, failed, wall time, files/s, speed-up over jobs1, peak RSS of the
coordinator and of the workers (largest and median), and the coordinator's DuckDB load share (the time
spent loading finished partitions into the store over the wall time: near 1 means the one writer is the
bottleneck). ``--json FILE`` also writes the rows.

    python bench_scaleout.py --files 64 --jobs 1,4,8,16 --start-cluster 16          # on the 16-core host
    python bench_scaleout.py --archive /data/archive --jobs 1,16 --scheduler tcp://10.0.0.5:8786
    .venv/bin/python bench/bench_scaleout.py --files 8 --jobs 1,2 --start-cluster 2   # a quick check here
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: Real nsys 2025.3 captures the archive copies, where they are found (largest first).
CAPTURES = (
    "llama1b_n1_h100_nsys2025.3.sqlite.xz",
    "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite.xz",
    "known_gpumetrics_osrt_h200_nsys2025.3.sqlite.xz",
    "known_graphmode_h200_nsys2025.3.sqlite.xz",
    "known_nodemode_h200_nsys2025.3.sqlite.xz",
    "small_matmul_h100_nsys2025.3.sqlite.xz",
)


def _fixture_dirs(explicit: Optional[str]) -> list[Path]:
    dirs = [Path(explicit)] if explicit else []
    if os.environ.get("TRACEFORGE_FIXTURES"):
        dirs.append(Path(os.environ["TRACEFORGE_FIXTURES"]))
    dirs.append(REPO / "tests" / "data")
    try:  # the capture bundled in the wheel (traceforge demo)
        import traceforge

        dirs.append(Path(traceforge.__file__).parent / "data")
    except ImportError:
        pass
    return [d for d in dirs if d.is_dir()]


def find_captures(explicit: Optional[str]) -> list[Path]:
    """The real captures available, one path per name (the first folder that has it)."""
    found: dict[str, Path] = {}
    for d in _fixture_dirs(explicit):
        for name in CAPTURES:
            if name not in found and (d / name).exists():
                found[name] = d / name
    return [found[n] for n in CAPTURES if n in found]


def _decompress(src: Path, dest: Path) -> None:
    if src.suffix == ".xz":
        with lzma.open(src) as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    else:
        shutil.copyfile(src, dest)


def build_archive(root: Path, files: int, captures: list[Path], synth: int, synth_kernels: int) -> int:
    """Write ``files`` distinct copies of ``captures`` (round robin) and ``synth`` synthetic exports."""
    root.mkdir(parents=True, exist_ok=True)
    plain: dict[Path, Path] = {}
    with tempfile.TemporaryDirectory(prefix="tf-scaleout-src-") as tmp:
        for src in captures:
            plain[src] = Path(tmp) / src.name.removesuffix(".xz")
            _decompress(src, plain[src])
        for i in range(files if captures else 0):
            src = captures[i % len(captures)]
            stem = src.name.split("_nsys")[0]
            dest = root / f"part{i % 8}" / f"{stem}_{i:04d}.sqlite"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plain[src], dest)
            con = sqlite3.connect(dest)
            # One kernel moved by the copy number: a distinct fingerprint, the same shape.
            con.execute(
                'UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = start + ?, "end" = "end" + ? '
                "WHERE rowid = (SELECT min(rowid) FROM CUPTI_ACTIVITY_KIND_KERNEL)",
                [i + 1, i + 1],
            )
            con.commit()
            con.close()
    from traceforge.synth import synthesize

    for i in range(synth):
        dest = root / "synth" / f"synth_{i:04d}.sqlite"
        dest.parent.mkdir(parents=True, exist_ok=True)
        synthesize(
            dest,
            kernels=synth_kernels,
            seed=i,
            nvtx_ranges=synth_kernels,
            gil_threads=8,
            gpu_metrics_hz=1000,
            osrt_calls=synth_kernels // 10,
            overwrite=True,
        )
    return len([p for p in root.rglob("*.sqlite")])


# ----------------------------------------------------------------------------------------------------
# One configuration, in a subprocess of its own


def run_one(config: dict[str, Any], archive: str, db: str) -> dict[str, Any]:
    """Ingest ``archive`` into ``db`` with one configuration; its figures."""
    if config.get("package"):  # another build's package, the peer of this run (worker processes inherit it)
        sys.path.insert(0, config["package"])
    elif (REPO / "python" / "traceforge").is_dir() and "traceforge" not in sys.modules:
        sys.path.insert(0, str(REPO / "python"))
    from traceforge import ingest
    from traceforge.ingest import batch
    from traceforge.store import Store

    # The coordinator's load: time spent in the loader's flushes (each loads finished partitions).
    load_s = [0.0]
    flush = batch._Loader.flush

    def timed_flush(self: Any, *args: Any, **kwargs: Any) -> None:
        t = time.perf_counter()
        try:
            flush(self, *args, **kwargs)
        finally:
            load_s[0] += time.perf_counter() - t

    batch._Loader.flush = timed_flush  # type: ignore[method-assign]

    # The run's timeline: when each result reached the coordinator (and how long its job took), and each
    # load's span, relative to the start; they say whether the workers or the one writer set the pace.
    arrivals: list[tuple[float, float]] = []
    spans: list[tuple[float, float]] = []
    settle, load_group = batch._settle, batch._Loader._run

    def timed_settle(store: Any, result: Any, **kwargs: Any) -> Any:
        arrivals.append((time.perf_counter() - start, float(result.seconds)))
        return settle(store, result, **kwargs)

    def timed_load(self: Any, group: Any, con: Any) -> Any:
        t = time.perf_counter()
        try:
            return load_group(self, group, con)
        finally:
            spans.append((t - start, time.perf_counter() - start))

    # The tail after the loads: the loader's close (its one checkpoint, with loads side by side).
    closing = [0.0]
    close_loader = batch._Loader.close

    def timed_close(self: Any) -> None:
        t = time.perf_counter()
        try:
            close_loader(self)
        finally:
            closing[0] += time.perf_counter() - t

    batch._Loader.close = timed_close  # type: ignore[method-assign]
    batch._settle = timed_settle
    batch._Loader._run = timed_load  # type: ignore[method-assign]
    if config.get("max_wait") is not None or config.get("max_group") is not None:
        # Another grouping: partitions queued up to max_wait seconds (groups of any size), or groups of
        # at most max_group partitions.
        init = batch._Loader.__init__

        def waiting_init(self: Any, *a: Any, **kw: Any) -> None:
            if config.get("max_wait") is not None:
                kw.update(max_group=10_000, max_wait_s=float(config["max_wait"]))
            if config.get("max_group") is not None:
                kw.update(max_group=int(config["max_group"]))
            init(self, *a, **kw)

        batch._Loader.__init__ = waiting_init  # type: ignore[method-assign]
    start = time.perf_counter()
    with Store(db) as store:
        report = ingest.run(
            store, [archive], jobs=config["jobs"], mode=config["mode"], scheduler=config.get("scheduler")
        )
        returned = time.perf_counter() - start
    wall = time.perf_counter() - start
    return {
        "config": config["name"],
        "files": len(report.outcomes),
        "ingested": report.count("ingested"),
        "failed": report.count("failed"),
        "wall_s": wall,
        # This build reports its loaders' busy time (loads run on threads); older ones are timed by flush.
        "load_s": getattr(report, "load_seconds", load_s[0]) if config["mode"] != "none" else None,
        "coordinator_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak_rss": sorted(report.worker_peak_rss_bytes.values()),
        "workers": report.workers,
        "failures": [f"{o.path}: {o.message}" for o in report.failures[:3]],
        "arrivals": sorted(arrivals),
        "load_spans": sorted(spans),
        "loader_close_s": closing[0],
        "run_returned_s": returned,
    }


# ----------------------------------------------------------------------------------------------------
# A Dask cluster of separate processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``dask scheduler`` and ``dask worker --nworkers N --nthreads 1`` processes on this host."""

    def __init__(self, workers: int, workdir: Path) -> None:
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        self.log = open(workdir / "dask.log", "w")  # noqa: SIM115 (closed in stop)
        python = sys.executable
        self.procs = [
            subprocess.Popen(
                [python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port]
                + ["--no-dashboard"],
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        ]
        time.sleep(1.0)
        self.procs.append(
            subprocess.Popen(
                [python, "-m", "distributed.cli.dask_worker", self.address, "--nworkers", str(workers)]
                + ["--nthreads", "1", "--no-dashboard", "--memory-limit", "0"]
                + ["--local-directory", str(workdir / "dask-worker-space")],
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        )
        from distributed import Client

        deadline = time.monotonic() + 120
        while True:
            try:
                with Client(self.address, timeout="10s") as client:
                    client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
                break
            except Exception:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    raise RuntimeError(
                        f"the Dask cluster did not start (see {workdir / 'dask.log'})"
                    ) from None
                time.sleep(1.0)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()


def _slots(address: str) -> int:
    from distributed import Client

    from traceforge.ingest.batch import all_workers_info

    with Client(address, timeout="30s") as client:
        return sum(int(w.get("nthreads", 1)) for w in all_workers_info(client).get("workers", {}).values())


# ----------------------------------------------------------------------------------------------------


def _print_timelines(rows: list[dict[str, Any]]) -> None:
    """Per configuration: when results arrived, how long the jobs took, and what the loads took."""
    header = (
        f"{'config':12} {'first s':>8} {'last s':>8} {'wall s':>8} {'job med s':>9} {'job max s':>9} "
        f"{'jobs sum s':>10} {'loads':>5} {'load sum s':>10} {'last load end':>13} {'close s':>7} "
        f"{'returned s':>10}"
    )
    print("\ntimeline (seconds from the start; close s: the loader's close, its checkpoint; returned s: when")
    print("ingest.run returned, before the store's close)")
    print(header)
    print("-" * len(header))
    for r in rows:
        arrivals, spans = r.get("arrivals") or [], r.get("load_spans") or []
        if not arrivals:
            continue
        jobs = [a[1] for a in arrivals]
        print(
            f"{r['config']:12} {arrivals[0][0]:>8.2f} {arrivals[-1][0]:>8.2f} {r['wall_s']:>8.2f} "
            f"{statistics.median(jobs):>9.2f} {max(jobs):>9.2f} {sum(jobs):>10.1f} {len(spans):>5} "
            f"{sum(e - s for s, e in spans):>10.2f} {(max(e for _, e in spans) if spans else 0):>13.2f} "
            f"{r.get('loader_close_s', 0):>7.2f} {r.get('run_returned_s', 0):>10.2f}"
        )


def _mb(b: float) -> str:
    return f"{b / 2**20:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", help="an existing archive to ingest (otherwise one is built)")
    parser.add_argument("--workdir", type=Path, help="where the archive and stores go (default: a temp dir)")
    parser.add_argument("--files", type=int, default=64, help="copies of the real captures [64]")
    parser.add_argument("--fixtures", help="folder of the real captures (*.sqlite.xz)")
    parser.add_argument("--synth", type=int, default=0, help="synthetic exports added to the archive [0]")
    parser.add_argument("--synth-kernels", type=int, default=100_000, help="kernels per synthetic export")
    parser.add_argument("--jobs", default="1,4,8,16", help="comma-separated --jobs values [1,4,8,16]")
    parser.add_argument("--scheduler", help="a Dask scheduler address for the dask-futures row")
    parser.add_argument(
        "--start-cluster", type=int, default=0, metavar="N", help="start a scheduler + N workers"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--loaders",
        default="",
        help="comma-separated TRACEFORGE_LOADERS values: each --jobs N > 1 runs once per value "
        "(rows jobsN-lK); default: the build's own choice",
    )
    parser.add_argument(
        "--peer",
        metavar="DIR",
        help="a folder holding another build's traceforge package: each --jobs N > 1 also runs with it "
        "(rows peer-jobsN, interleaved with this build's), a same-run before/after",
    )
    parser.add_argument(
        "--waits",
        default="",
        help="comma-separated seconds a finished partition may wait before its load (groups of any size): "
        "each --jobs N > 1 also runs once per value (rows jobsN-wS); default: the build's own grouping",
    )
    parser.add_argument(
        "--groups",
        default="",
        help="comma-separated largest groups of partitions a load takes: each --jobs N > 1 also runs "
        "once per value (rows jobsN-gK); default: the build's own grouping",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one), args.archive, args.db)))
        return 0

    own_tmp = None
    if args.workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="tf-scaleout-")
        args.workdir = Path(own_tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.archive:
            archive = Path(args.archive)
            n = len(list(archive.rglob("*.sqlite")))
        else:
            archive = args.workdir / "archive"
            shutil.rmtree(archive, ignore_errors=True)
            captures = find_captures(args.fixtures)
            if not captures and not args.synth:
                print("no real captures found and --synth 0: nothing to ingest", file=sys.stderr)
                return 2
            t0 = time.perf_counter()
            n = build_archive(archive, args.files, captures, args.synth, args.synth_kernels)
            print(
                f"archive: {n} files from {len(captures)} real captures"
                + (f" and {args.synth} synthetic exports" if args.synth else "")
                + f", built in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        size = sum(p.stat().st_size for p in archive.rglob("*.sqlite"))
        configs: list[dict[str, Any]] = []
        for j in (int(x) for x in args.jobs.split(",") if x.strip()):
            mode = "none" if j == 1 else "concurrent"
            loaders = [x.strip() for x in args.loaders.split(",") if x.strip()] if j > 1 else []
            for k in loaders or [None]:
                name = f"jobs{j}" if k is None else f"jobs{j}-l{k}"
                configs.append({"name": name, "jobs": j, "mode": mode, "loaders": k})
            for w in [x.strip() for x in args.waits.split(",") if x.strip()] if j > 1 else []:
                configs.append({"name": f"jobs{j}-w{w}", "jobs": j, "mode": mode, "max_wait": float(w)})
            for g in [x.strip() for x in args.groups.split(",") if x.strip()] if j > 1 else []:
                configs.append({"name": f"jobs{j}-g{g}", "jobs": j, "mode": mode, "max_group": int(g)})
            if args.peer and j > 1:
                peer = {"name": f"peer-jobs{j}", "jobs": j, "mode": mode, "package": args.peer}
                configs.append(peer)
        cluster = None
        if args.start_cluster:
            cluster = Cluster(args.start_cluster, args.workdir)
            args.scheduler = cluster.address
        try:
            if args.scheduler:
                slots = _slots(args.scheduler)
                configs.append(
                    {
                        "name": f"dask{slots}",
                        "jobs": slots,
                        "mode": "dask-futures",
                        "scheduler": args.scheduler,
                    }
                )
            rows = []
            for config in configs:
                db = args.workdir / f"{config['name']}.duckdb"
                for suffix in ("", ".wal"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                env = dict(os.environ)
                if config.get("loaders"):
                    env["TRACEFORGE_LOADERS"] = str(config["loaders"])
                res = subprocess.run(
                    [sys.executable, __file__, "--one", json.dumps(config), "--archive", str(archive)]
                    + ["--db", str(db)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if res.returncode != 0:
                    print(
                        f"{config['name']}: failed (rc {res.returncode})\n{res.stderr[-3000:]}",
                        file=sys.stderr,
                    )
                    continue
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                db.unlink(missing_ok=True)
        finally:
            if cluster is not None:
                cluster.stop()
        base = next((r["wall_s"] for r in rows if r["config"] == "jobs1"), None)
        header = (
            f"{'config':12} {'files':>6} {'ok':>6} {'failed':>6} {'wall s':>8} {'files/s':>8} "
            f"{'speed-up':>8} {'coord MB':>9} {'worker max MB':>13} {'worker med MB':>13} {'load share':>10}"
        )
        print(
            f"archive: {n} files, {size / 1e6:,.0f} MB; {os.cpu_count()} CPUs; "
            f"Python {sys.version.split()[0]}"
        )
        print(header)
        print("-" * len(header))
        for r in rows:
            speed = f"{base / r['wall_s']:.2f}x" if base else "-"
            peaks = r["worker_peak_rss"]
            share = f"{r['load_s'] / r['wall_s']:.0%}" if r["load_s"] is not None else "-"
            print(
                f"{r['config']:12} {r['files']:>6} {r['ingested']:>6} {r['failed']:>6} {r['wall_s']:>8.2f} "
                f"{r['files'] / r['wall_s']:>8.2f} {speed:>8} {_mb(r['coordinator_peak_rss']):>9} "
                f"{(_mb(max(peaks)) if peaks else '-'):>13} "
                f"{(_mb(statistics.median(peaks)) if peaks else '-'):>13} {share:>10}"
            )
            for failure in r["failures"]:
                print(f"    failed: {failure}")
        _print_timelines(rows)
        print(
            "\nspeed-up: files/s over jobs1 (target >= 8x at 16 workers); load share: the coordinator's time "
            "loading partitions into DuckDB over the wall time (the single writer; near 100% = bottleneck)."
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0 if rows else 1
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
