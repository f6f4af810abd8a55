"""Capturing a long-lived server with nsys's session commands, one report per measurement.

``nsys profile SERVER`` stopped by a signal loses the GPU records of a server that dies before CUPTI
flushes (seen with ``transformers serve``: 446 API calls and no kernel table). nsys's session commands keep
them: ``nsys launch --session-new=S -t ... SERVER`` starts the server traced but recording nothing,
``nsys start --session=S -o FILE`` / ``nsys stop --session=S`` bracket one measurement (the server keeps
running; ``FILE.nsys-rep`` is written at the stop), and ``nsys shutdown --session=S --kill=sigterm`` ends it.

Which options go where is nsys's rule: ``launch`` fixes what is traced (``-t``, ``--cuda-graph-trace``,
``--osrt-threshold`` ...: the spec's ``capture.nsys_args``), ``start`` fixes sampling, GPU metrics and the
output (``capture.nsys_start_args``).

An nsys whose host importer is not beside its collector (Debian's split ``nsight-systems-target``
package; NVIDIA's image without ``libdw``) writes only ``FILE.qdstrm`` at the stop: it is imported here
with ``QdstrmImporter`` when one can be found, which is what the user would otherwise do by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from ..errors import ServerFailed

#: Where ``QdstrmImporter`` may be, besides ``$TRACEFORGE_QDSTRM_IMPORTER`` and PATH.
IMPORTER_ENV = "TRACEFORGE_QDSTRM_IMPORTER"
_KNOWN_IMPORTERS = ("/usr/lib/nsight-systems/host-linux-x64/QdstrmImporter",)


def find_importer(nsys: str) -> str | None:
    """The ``QdstrmImporter`` of the nsys at ``nsys``, or of any installed nsys (None: none found).

    NVIDIA's layout puts it in ``host-linux-x64/`` beside the collector's ``target-linux-x64/``.
    """
    if os.environ.get(IMPORTER_ENV):
        return os.environ[IMPORTER_ENV]
    found = shutil.which(nsys)
    if found:
        root = Path(os.path.realpath(found)).parent.parent
        candidate = root / "host-linux-x64" / "QdstrmImporter"
        if candidate.is_file():
            return str(candidate)
    for path in (*_KNOWN_IMPORTERS, shutil.which("QdstrmImporter")):
        if path and os.path.isfile(path):
            return path
    return None


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


class NsysSession:
    """One nsys session around a server: launched once, started and stopped per measurement.

    Args:
        nsys: the nsys binary.
        trace: the ``-t`` value.
        launch_args: more options of ``nsys launch``.
        start_args: options of each ``nsys start``.
    """

    def __init__(
        self, nsys: str, trace: str, launch_args: tuple[str, ...], start_args: tuple[str, ...]
    ) -> None:
        self.nsys = nsys
        self.name = f"traceforge-{uuid.uuid4().hex[:12]}"
        self.trace = trace
        self.launch_args = launch_args
        self.start_args = start_args
        self.recording: str | None = None

    def launch_command(self, server_command: list[str]) -> list[str]:
        """The command that starts ``server_command`` traced by this session."""
        return [
            self.nsys,
            "launch",
            f"--session-new={self.name}",
            "-t",
            self.trace,
            *self.launch_args,
            *server_command,
        ]

    def _run(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.nsys, *args, f"--session={self.name}"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def start(self, report_base: str) -> None:
        """Start recording into ``report_base`` (``.nsys-rep`` is added by nsys).

        Raises:
            ServerFailed: nsys refused (its message is the reason).
        """
        for stale in (".nsys-rep", ".qdstrm"):
            if os.path.exists(report_base + stale):
                os.unlink(report_base + stale)
        try:
            proc = self._run(["start", "-o", report_base, "--force-overwrite", "true", *self.start_args], 120)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerFailed(f"nsys start failed: {exc}") from exc
        if proc.returncode != 0:
            raise ServerFailed(f"nsys start failed ({proc.returncode}): {_tail(proc.stderr + proc.stdout)}")
        self.recording = report_base

    def stop(self, timeout_s: float = 1800.0) -> tuple[str | None, str | None]:
        """Stop recording; returns ``(report path, note)``: the ``.nsys-rep`` written, or None and why."""
        base = self.recording
        if base is None:
            return None, "nsys capture was never started"
        self.recording = None
        try:
            proc = self._run(["stop"], timeout_s)
            said = _tail(proc.stderr + proc.stdout) if proc.returncode != 0 else ""
        except (OSError, subprocess.SubprocessError) as exc:
            said = str(exc)
        report = base + ".nsys-rep"
        # nsys writes the report at the stop; allow the file system a moment to show it.
        deadline = time.monotonic() + 10.0
        while not os.path.exists(report) and not os.path.exists(base + ".qdstrm"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if os.path.exists(report):
            return report, None
        if os.path.exists(base + ".qdstrm"):
            return self._import(base)
        return None, "nsys stop wrote no report" + (f": {said}" if said else "")

    def _import(self, base: str) -> tuple[str | None, str | None]:
        importer = find_importer(self.nsys)
        if importer is None:
            return None, (
                f"nsys wrote only {base}.qdstrm and no QdstrmImporter was found "
                f"(install the nsys host package or set ${IMPORTER_ENV})"
            )
        try:
            proc = subprocess.run(
                [importer, "-i", base + ".qdstrm"], capture_output=True, text=True, timeout=1800
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"QdstrmImporter failed: {exc}"
        if proc.returncode != 0 or not os.path.exists(base + ".nsys-rep"):
            return None, f"QdstrmImporter failed ({proc.returncode}): {_tail(proc.stderr + proc.stdout)}"
        os.unlink(base + ".qdstrm")
        return base + ".nsys-rep", None

    def shutdown(self) -> None:
        """End the session, stopping the server with SIGTERM (nsys refuses SIGINT here)."""
        if self.recording is not None:
            self.stop()
        try:
            self._run(["shutdown", "--kill=sigterm"], 120)
        except (OSError, subprocess.SubprocessError):
            pass  # the caller kills what is left of the server's process tree
