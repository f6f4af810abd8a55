"""Turning ``.nsys-rep`` reports into SQLite exports with the installed ``nsys``."""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from ..errors import NsysNotFoundError

#: Where nsys usually lives when it is not on PATH (newest first after sorting).
_USUAL_GLOBS = (
    "/opt/nvidia/nsight-systems/*/bin/nsys",
    "/opt/nvidia/nsight-systems-cli/*/bin/nsys",
    "/usr/local/cuda/bin/nsys",
    "/usr/local/cuda-*/bin/nsys",
    "/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys",
    "/usr/lib/nsight-systems/bin/nsys",
)

_VERSION_RE = re.compile(rb"(20[12]\d\.\d{1,2}\.\d+(?:\.\d+)?)")


def find_nsys() -> str | None:
    """The nsys binary to use: ``$NSYS``, then ``nsys`` on PATH, then the usual install folders."""
    env = os.environ.get("NSYS")
    if env:
        return env if os.path.exists(env) else None
    on_path = shutil.which("nsys")
    if on_path:
        return on_path
    for pattern in _USUAL_GLOBS:
        hits = sorted(glob.glob(pattern), reverse=True)
        if hits:
            return hits[0]
    return None


def nsys_version(nsys: str) -> str:
    """The version ``nsys --version`` prints (or "unknown")."""
    try:
        out = subprocess.run([nsys, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = _VERSION_RE.search(out.encode())
    return match.group(1).decode() if match else out.strip() or "unknown"


def report_version(report: str | os.PathLike[str]) -> str | None:
    """The nsys version recorded in a report's header, if one can be read."""
    try:
        with open(report, "rb") as fh:
            head = fh.read(4 << 20)
    except OSError:
        return None
    found = _VERSION_RE.findall(head)
    if not found:
        return None
    # The most frequent version-like string is the producer's; paths may mention others once.
    return max(set(found), key=found.count).decode()


def _beside(report: str) -> str:
    """``a.sqlite`` for ``a.nsys-rep``: where ``nsys export`` (and nsys's own profile) writes the export."""
    return (
        report[: -len(".nsys-rep")] + ".sqlite"
        if report.lower().endswith(".nsys-rep")
        else report + ".sqlite"
    )


def export_beside(report: str) -> str | None:
    """The SQLite export lying beside a report, when it is the report's export; else None.

    ``a.sqlite`` next to ``a.nsys-rep`` is taken for its export when it is a non-empty file modified no
    earlier than the report (``nsys export``, ``nsys profile --export sqlite`` and ``nsys stats`` write it
    after the report). An older one was exported from an earlier capture of that name: not used.
    """
    sqlite = _beside(report)
    try:
        rep, exp = os.stat(report), os.stat(sqlite)
    except OSError:
        return None
    if not stat.S_ISREG(exp.st_mode) or exp.st_size == 0 or exp.st_mtime < rep.st_mtime:
        return None
    return sqlite


def _stale_hint(report: str) -> str:
    """A note for a failed export when an older ``.sqlite`` of that name lies beside the report."""
    sqlite = _beside(report)
    if os.path.isfile(sqlite) and export_beside(report) is None:
        return (
            f"; {os.path.basename(sqlite)} beside it is older than the report (an earlier capture's export), "
            "so it was not used: export the report again, or remove the old .sqlite"
        )
    return ""


def export_to_sqlite(report: str, out_dir: str, *, timeout_s: float = 3600) -> str:
    """Run ``nsys export --type sqlite`` on ``report`` into ``out_dir`` and return the SQLite path.

    Callers use :func:`export_beside` first: a report's export lying beside it needs no nsys.

    Raises:
        NsysNotFoundError: no nsys is installed, or it cannot read this report (the message says which
            nsys wrote the report and which is installed).
    """
    nsys = find_nsys()
    written_by = report_version(report)
    if nsys is None:
        raise NsysNotFoundError(
            "a .nsys-rep needs `nsys export`, and no nsys was found (set $NSYS, put nsys on PATH, or "
            "give the exported .sqlite instead)"
            + (f"; the report was written by nsys {written_by}" if written_by else "")
            + _stale_hint(report),
            path=report,
        )
    out = str(Path(out_dir) / (Path(report).stem + ".sqlite"))
    cmd = [nsys, "export", "--type", "sqlite", "--force-overwrite", "true", "--output", out, report]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        message = f"`nsys export` did not finish within {timeout_s:.0f} s"
        raise NsysNotFoundError(message, path=report) from exc
    except OSError as exc:
        raise NsysNotFoundError(f"cannot run {nsys}: {exc.strerror}", path=report) from exc
    if proc.returncode != 0 or not os.path.exists(out):
        installed = nsys_version(nsys)
        detail = " ".join((proc.stderr or proc.stdout or "").split())[:300]
        if written_by and written_by.split(".")[:2] != installed.split(".")[:2]:
            reason = (
                f"the installed nsys {installed} ({nsys}) cannot export this report written by nsys "
                f"{written_by}; install nsys {written_by} or newer, or export it where it was captured"
            )
        else:
            reason = f"`nsys export` failed (nsys {installed} at {nsys})"
        message = f"{reason}: {detail}" if detail else reason
        raise NsysNotFoundError(message + _stale_hint(report), path=report)
    return out
