"""One cell of a sweep: a worker process in its own process group, watched by a heartbeat and a deadline.

The sweep (parent) starts ``python -m traceforge.runners.cell JOB.json`` with ``start_new_session=True``,
optionally as the target of ``nsys profile``. The worker runs the cell's N agents (threads, or processes for
``agent_mode = "processes"``) against the backend and appends one JSON line per event to the job's events
file: each finished request, and a heartbeat whenever tokens arrived since the last one. The parent tails the
file, commits each request row at once, and kills the whole process group (SIGTERM, then SIGKILL after
``kill_grace_s``, then any straggling descendant, nsys included) when no progress came for
``heartbeat_timeout_s`` (``hung``) or the cell outlived ``timeout_s`` (``timeout``). The worker also exits on
its own when the sweep process disappears, so a killed sweep leaves no orphan running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .spec import Spec, Workload

#: A request row's fields produced by the worker (the sweep adds ids).
REQUEST_FIELDS = (
    "agent",
    "request_index",
    "status",
    "error",
    "start_s",
    "wall_ms",
    "ttft_ms",
    "prompt_tokens",
    "output_tokens",
    "tokens_per_s",
    "decode_tokens_per_s",
    "eval_count",
    "eval_duration_ns",
    "prompt_eval_count",
    "prompt_eval_duration_ns",
    "finish_reason",
    "nvtx_range",
)


# --------------------------------------------------------------------------------------------- worker side


class _Events:
    """Append-only JSON-lines event file shared by the worker's threads (and agent processes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.progress_at = time.monotonic()
        self.dirty = False

    def emit(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, default=str) + "\n").encode()
        with self.lock:
            # O_APPEND keeps lines from agent processes whole: each is one write() of less than a page.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def progress(self) -> None:
        self.dirty = True


def _make_backend(spec: Spec, model: str, api: str) -> Any:
    if spec.backend == "ollama":
        from .ollama import OllamaBackend

        return OllamaBackend(
            spec.base_url or "",
            model,
            api=api,
            options=spec.options,
            temperature=spec.temperature,
            seed=spec.seed,
            timeout_s=spec.request_timeout_s,
        )
    if spec.backend == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(
            spec.base_url or "",
            model,
            api=api,
            preset=spec.preset,
            temperature=spec.temperature,
            seed=spec.seed,
            timeout_s=spec.request_timeout_s,
            options=spec.options,
            api_key_env=spec.api_key_env,
        )
    from .pytorch_direct import PytorchDirectBackend

    return PytorchDirectBackend(
        model,
        model_config=spec.model_config,
        dtype=spec.dtype,
        device=spec.device,
        seed=spec.seed,
        stream_per_agent=spec.stream_per_agent,
    )


def _prompt_text(workload: Workload) -> str:
    if workload.prompt is not None:
        return workload.prompt
    # A server tokenizes text itself: about one token per short English word.
    words = ("the quick brown fox jumps over a lazy dog while agents measure throughput " * 64).split()
    n = int(workload.prompt_tokens or 1)
    return " ".join((words * (n // len(words) + 1))[:n])


def _one_request(
    backend: Any,
    spec: Spec,
    workload: Workload,
    prompt: Any,
    agent: int,
    index: int,
    t0_wall: float,
    progress: Callable[[], None],
) -> dict[str, Any]:
    from .http_common import RequestFailed

    start = time.time()
    row: dict[str, Any] = {"agent": agent, "request_index": index, "start_s": start - t0_wall}
    try:
        if spec.backend == "pytorch_direct":
            res = backend.request(prompt, workload.max_new_tokens, progress, agent=agent, index=index)
        else:
            res = backend.request(prompt, workload.max_new_tokens, progress)
    except RequestFailed as exc:
        row.update(status="error", error=str(exc), wall_ms=(time.time() - start) * 1000.0)
        return row
    except Exception as exc:  # noqa: BLE001 - any backend bug is this request's error, not the cell's death
        row.update(
            status="error", error=f"{type(exc).__name__}: {exc}", wall_ms=(time.time() - start) * 1000.0
        )
        return row
    wall_s = res.pop("wall_s")
    ttft_s = res.pop("ttft_s")
    out = res.get("output_tokens") or 0
    row.update(res)
    row.update(
        status="ok",
        wall_ms=wall_s * 1000.0,
        ttft_ms=None if ttft_s is None else ttft_s * 1000.0,
        tokens_per_s=out / wall_s if wall_s > 0 else None,
        decode_tokens_per_s=((out - 1) / (wall_s - ttft_s))
        if ttft_s is not None and out > 1 and wall_s > ttft_s
        else None,
    )
    return row


def _agent_loop(
    backend: Any,
    spec: Spec,
    workload: Workload,
    prompt: Any,
    agent: int,
    requests: int,
    t0_wall: float,
    events: _Events,
) -> None:
    for index in range(requests):
        if index and workload.request_interval_s:
            time.sleep(workload.request_interval_s)
        row = _one_request(backend, spec, workload, prompt, agent, index, t0_wall, events.progress)
        events.emit({"type": "request", **row})


def _agent_process(job: dict[str, Any], agent: int, t0_wall: float) -> None:
    """Entry of one agent process (``agent_mode = "processes"``): its own model and CUDA context."""
    spec = Spec.from_json(job["spec"])
    workload = next(w for w in spec.workloads if w.name == job["workload"])
    events = _Events(job["events"])
    _start_heartbeat(events, job.get("sweep_pid"))
    backend = _make_backend(spec, job["model"], spec.workload_api(workload))
    prompt = _prepare_prompt(backend, spec, workload)
    events.emit({"type": "agent_ready", "agent": agent})
    _agent_loop(backend, spec, workload, prompt, agent, job["requests_per_agent"], t0_wall, events)


def _prepare_prompt(backend: Any, spec: Spec, workload: Workload) -> Any:
    if spec.backend == "pytorch_direct":
        return backend.prompt_ids(workload.prompt, workload.prompt_tokens)
    return _prompt_text(workload)


def _start_heartbeat(events: _Events, sweep_pid: int | None) -> None:
    def beat() -> None:
        while True:
            time.sleep(0.5)
            if events.dirty:
                events.dirty = False
                events.emit({"type": "hb", "t": time.time()})
            if sweep_pid and not _alive(sweep_pid):
                # The sweep was killed: do not live on as an orphan holding the GPU.
                os._exit(3)

    threading.Thread(target=beat, name="traceforge-heartbeat", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_go(job: dict[str, Any]) -> None:
    """Block until the sweep says the measurement may start (it creates ``go_file``), if it asked to.

    A server captured through an nsys session records only between ``nsys start`` and ``nsys stop``: the
    sweep starts the capture once the worker is ready (warm-up done) and only then lets the agents go, so a
    cell's report holds exactly its timed requests.
    """
    go = job.get("go_file")
    if not go:
        return
    while not os.path.exists(go):
        time.sleep(0.02)


def worker_main(job_path: str) -> int:
    """Run one cell as described by ``job_path`` (JSON written by :func:`run_cell`)."""
    job = json.loads(Path(job_path).read_text())
    spec = Spec.from_json(job["spec"])
    workload = next(w for w in spec.workloads if w.name == job["workload"])
    events = _Events(job["events"])
    events.emit({"type": "start", "pid": os.getpid(), "t": time.time()})
    _start_heartbeat(events, job.get("sweep_pid"))
    n = int(job["n"])
    requests = int(job["requests_per_agent"])
    try:
        if spec.backend == "pytorch_direct":
            from .pytorch_direct import versions

            events.emit({"type": "env", "versions": versions()})
        if spec.agent_mode == "processes" and n > 1:
            return _run_processes(job, spec, workload, events, n)
        backend = _make_backend(spec, job["model"], spec.workload_api(workload))
        prompt = _prepare_prompt(backend, spec, workload)
        for i in range(int(job.get("warmup_requests", 0))):
            row = _one_request(backend, spec, workload, prompt, 0, -1 - i, time.time(), events.progress)
            events.emit({"type": "warmup", "status": row["status"], "error": row.get("error")})
        events.emit({"type": "ready", "t": time.time()})
        _wait_for_go(job)
        t0 = time.time()
        threads = [
            threading.Thread(
                target=_agent_loop,
                name=f"agent{a}",
                args=(backend, spec, workload, prompt, a, requests, t0, events),
            )
            for a in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except Exception as exc:  # noqa: BLE001 - reported to the sweep as the cell's reason
        events.emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 2
    events.emit({"type": "done", "t": time.time()})
    return 0


def _run_processes(job: dict[str, Any], spec: Spec, workload: Workload, events: _Events, n: int) -> int:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    events.emit({"type": "ready", "t": time.time()})
    _wait_for_go(job)
    t0 = time.time()
    procs = [ctx.Process(target=_agent_process, args=(job, a, t0), name=f"agent{a}") for a in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p for p in procs if p.exitcode != 0]
    if bad:
        events.emit(
            {
                "type": "error",
                "message": f"{len(bad)} agent process(es) exited with "
                f"{sorted({p.exitcode for p in bad if p.exitcode is not None})}",
            }
        )
        return 2
    events.emit({"type": "done", "t": time.time()})
    return 0


# --------------------------------------------------------------------------------------------- parent side


@dataclass
class CellOutcome:
    """How a cell ended, as the sweep records it in ``cells``."""

    status: str
    reason: str | None
    wall_s: float
    requests_ok: int = 0
    requests_failed: int = 0
    report_path: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    returncode: int | None = None


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux ``/proc``), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def kill_tree(proc: subprocess.Popen[Any], grace_s: float, first_signal: int = signal.SIGTERM) -> None:
    """Stop a process started with ``start_new_session=True``, its group and every descendant, and reap it."""
    if proc.poll() is not None and not descendants(proc.pid):
        return
    tree = descendants(proc.pid)
    try:
        os.killpg(proc.pid, first_signal)
    except ProcessLookupError:
        pass
    for pid in tree:  # descendants that left the group (nsys may start its target in another one)
        _signal(pid, first_signal)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    tree = sorted(set(tree) | set(descendants(proc.pid)))
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in tree:
        _signal(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_cell(
    spec: Spec,
    *,
    cell_dir: Path,
    model: str,
    workload: str,
    n: int,
    requests_per_agent: int,
    warmup_requests: int,
    on_request: Callable[[dict[str, Any]], None],
    on_tick: Callable[[], None] | None = None,
    wrapper: list[str] | None = None,
    report_path: str | None = None,
    timeout_s: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> CellOutcome:
    """Run one cell in its own process group and watch it.

    Args:
        spec: the sweep spec.
        cell_dir: a directory for the job, event and log files.
        model: the model the cell runs.
        workload: the workload's name.
        n: concurrency (number of agents).
        requests_per_agent: requests each agent sends.
        warmup_requests: requests before timing starts (not recorded).
        on_request: called in this process with each finished request's row, as it arrives.
        on_tick: called about ten times a second (telemetry flushes, progress bar).
        wrapper: a command prefix such as ``nsys profile ... --`` (the worker becomes its target).
        report_path: the file the wrapper writes (recorded when it exists afterwards).
        timeout_s: hard deadline (default: the spec's ``timeout_s``).
        on_ready: called once the worker is warmed up and before its agents start (the agents wait for
            it to return); starts a server's nsys capture. If it raises, the cell fails with its message.

    Returns:
        The cell's outcome; it never raises for a misbehaving cell.
    """
    cell_dir.mkdir(parents=True, exist_ok=True)
    events_path = cell_dir / "events.jsonl"
    if events_path.exists():
        events_path.unlink()
    job = {
        "spec": spec.to_json(),
        "model": model,
        "workload": workload,
        "n": n,
        "requests_per_agent": requests_per_agent,
        "warmup_requests": warmup_requests,
        "events": str(events_path),
        "sweep_pid": os.getpid(),
    }
    go_path = cell_dir / "go"
    if go_path.exists():
        go_path.unlink()
    if on_ready is not None:
        job["go_file"] = str(go_path)
    job_path = cell_dir / "job.json"
    job_path.write_text(json.dumps(job))
    cmd = [*(wrapper or []), sys.executable, "-m", "traceforge.runners.cell", str(job_path)]
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    deadline_s = timeout_s if timeout_s is not None else spec.timeout_s
    log = open(cell_dir / "worker.log", "wb")  # noqa: SIM115 - closed below, after the child is reaped
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, stdin=subprocess.DEVNULL
    )
    offset = 0
    pending = b""
    last_progress = start
    status: str | None = None
    reason: str | None = None
    ok = failed = 0
    error_msg: str | None = None
    versions: dict[str, Any] = {}
    done = False
    ready = False
    ready_error: str | None = None

    def drain() -> None:
        nonlocal offset, pending, last_progress, ok, failed, error_msg, done, ready
        try:
            with open(events_path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        offset += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            last_progress = time.monotonic()
            kind = ev.get("type")
            if kind == "request":
                row = {k: ev.get(k) for k in REQUEST_FIELDS}
                if row["status"] == "ok":
                    ok += 1
                else:
                    failed += 1
                on_request(row)
            elif kind == "error":
                error_msg = ev.get("message")
            elif kind == "env":
                versions.update(ev.get("versions") or {})
            elif kind == "done":
                done = True
            elif kind == "ready":
                ready = True

    try:
        while True:
            drain()
            if ready and on_ready is not None and not go_path.exists() and ready_error is None:
                try:
                    on_ready()
                except Exception as exc:  # noqa: BLE001 - the cell's reason, not the sweep's death
                    ready_error = str(exc)
                    status, reason = "failed", f"capture did not start: {exc}"
                    break
                go_path.touch()
                last_progress = time.monotonic()
            if on_tick is not None:
                on_tick()
            if proc.poll() is not None:
                break
            now = time.monotonic()
            if done and wrapper:
                # The worker finished; nsys/ncu now write their report, which for a million kernels takes
                # minutes and emits no events: only a generous deadline applies.
                if now - last_progress > max(600.0, deadline_s):
                    status, reason = "timeout", "profiler did not finish writing its report; killed"
                    break
                time.sleep(0.1)
                continue
            if now - start > deadline_s:
                status, reason = "timeout", f"cell exceeded timeout_s = {deadline_s:g} s; killed"
                break
            if now - last_progress > spec.heartbeat_timeout_s:
                status = "hung"
                reason = (
                    f"no progress for {spec.heartbeat_timeout_s:g} s (heartbeat_timeout_s) after "
                    f"{ok + failed} requests; killed"
                )
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None or descendants(proc.pid):
            # SIGINT first when under nsys: it then finalises the report of what ran, hang included.
            kill_tree(proc, spec.kill_grace_s, signal.SIGINT if wrapper else signal.SIGTERM)
        log.close()
    drain()
    wall = time.monotonic() - start
    if status is None:
        rc = proc.returncode
        planned = n * requests_per_agent
        if error_msg or rc != 0:
            status = "failed"
            tail = _log_tail(cell_dir / "worker.log")
            reason = error_msg or f"worker exited with status {rc}" + (f": {tail}" if tail else "")
        elif ok + failed < planned:
            status, reason = "failed", f"only {ok + failed} of {planned} requests finished"
        elif failed:
            # Every request finished: the failed ones are counted (requests_failed) and the cell's summary
            # is of the ones that succeeded; only a cell where none did is failed.
            first = _first_error(events_path)
            status = "ok" if ok else "failed"
            reason = f"{failed} of {planned} requests failed; first: {first}"
        elif not done:
            status, reason = "failed", "worker ended without reporting completion"
        else:
            status, reason = "ok", None
    report = report_path if report_path and os.path.exists(report_path) else None
    return CellOutcome(
        status=status,
        reason=reason,
        wall_s=wall,
        requests_ok=ok,
        requests_failed=failed,
        report_path=report,
        versions=versions,
        returncode=proc.returncode,
    )


def _first_error(events_path: Path) -> str:
    try:
        for raw in events_path.read_bytes().splitlines():
            ev = json.loads(raw)
            if ev.get("type") == "request" and ev.get("status") != "ok":
                return str(ev.get("error"))
    except (OSError, ValueError):
        pass
    return "unknown"


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(worker_main(sys.argv[1]))
