"""The servers a sweep starts for server backends, and the pre-flight check of any server it talks to.

A ``[server]`` is started in its own process group, optionally inside an nsys session
(:mod:`traceforge.runners.nsys_session`), and is ready when its ``ready_url`` (default: the spec's
``base_url``) answers HTTP. With ``scope = "sweep"`` one start serves all its cells; a server that died or
whose cell hung is started afresh for the next cell. Every failure names the server's log and quotes its
last line, which is where the real reason (a missing model, a port in use) usually is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import ServerFailed
from .cell import descendants, kill_tree
from .nsys_session import NsysSession
from .nsys_trace import choose_trace
from .spec import Server, Spec


def log_tail(path: Path, lines: int = 1) -> str:
    """The last non-empty line(s) of a log (empty when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])[:400]


def answers(url: str, timeout_s: float = 3.0) -> str | None:
    """None when ``url`` answers HTTP (any status: the server is up), else why it does not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - the spec's own URL
            return None if resp.status < 500 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def preflight(spec: Spec) -> str | None:
    """For a server the sweep does not start: None when ``base_url`` answers, else the reason."""
    url = spec.base_url or ""
    problem = answers(url)
    if problem is None:
        return None
    return f"pre-flight: the server at {url} did not answer ({problem}); is it running?"


class RunningServer:
    """A started server (and its nsys session, when it is captured)."""

    def __init__(
        self, server: Server, proc: subprocess.Popen[Any], session: NsysSession | None, log: Path
    ) -> None:
        self.server = server
        self.proc = proc
        self.session = session
        self.log = log
        #: Every process of the server's tree seen so far: under nsys the server is a grandchild of
        #: ``nsys launch``, which may exit first and leave it to init, out of reach of ``kill_tree``.
        self.pids: set[int] = set()

    def _remember_tree(self) -> None:
        self.pids |= set(descendants(self.proc.pid))

    @classmethod
    def start(cls, spec: Spec, server: Server, log_dir: Path, nsys: str | None) -> RunningServer:
        """Start ``server`` and wait until it answers.

        Args:
            spec: the sweep spec (``base_url``, capture options, kill grace).
            server: which of the spec's servers.
            log_dir: where ``server.log`` goes.
            nsys: the nsys binary when the server is to be captured (``server.under_nsys``).

        Raises:
            ServerFailed: it exited or did not answer within ``ready_timeout_s`` (the log's last line
                is in the message).
        """
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "server.log"
        cmd = list(server.command)
        session = None
        if nsys and server.under_nsys:
            trace = choose_trace(spec.capture.nsys_trace, nsys).trace
            session = NsysSession(nsys, trace, spec.capture.nsys_args, spec.capture.nsys_start_args)
            cmd = session.launch_command(cmd)
        env = {**os.environ, **server.env}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        running = cls(server, proc, session, log_path)
        url = server.ready_url or spec.base_url or ""
        deadline = time.monotonic() + server.ready_timeout_s
        problem: str | None = "not tried"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                running.stop(spec.kill_grace_s)
                raise ServerFailed(
                    f"server exited with status {proc.returncode} before it answered at {url} "
                    f"({log_path}: {log_tail(log_path) or 'empty'})"
                )
            problem = answers(url, timeout_s=2.0)
            if problem is None:
                running._remember_tree()
                return running
            time.sleep(0.2)
        running.stop(spec.kill_grace_s)
        raise ServerFailed(
            f"pre-flight: server not answering at {url} within {server.ready_timeout_s:g} s ({problem}; "
            f"{log_path}: {log_tail(log_path) or 'empty'})"
        )

    def alive(self) -> bool:
        """Whether the server process (or the nsys launcher holding it) still runs."""
        return self.proc.poll() is None

    def stop(self, grace_s: float) -> None:
        """Stop the server: end its nsys session (SIGTERM to the server), then kill what is left.

        Returns once every process of its tree is gone, so the next server can take the port.
        """
        self._remember_tree()
        if self.session is not None:
            self.session.shutdown()
        kill_tree(self.proc, max(grace_s, 5.0), signal.SIGTERM)
        left = [p for p in self.pids if _running(p)]
        for sig, wait_s in ((signal.SIGTERM, max(grace_s, 5.0)), (signal.SIGKILL, 10.0)):
            for pid in left:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + wait_s
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = [p for p in left if _running(p)]
            if not left:
                break


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, waiting for its parent to reap it, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
