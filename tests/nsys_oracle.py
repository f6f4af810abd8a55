"""Nsight Systems itself as an oracle: run Debian's ``nsys stats`` (2022.4) on an export and parse its CSVs.

``nsys stats`` of that era reads nsys 2025.3 SQLite exports fine: it only runs SQL over them (its report
scripts live in ``/usr/lib/x86_64-linux-gnu/nsight-systems/target-linux-x64/reports/``). Results are cached
per export content for the test session, in a directory the caller gives (a pytest ``tmp_path_factory`` dir).

Where nsys' definitions differ from traceforge's (the tests document each one where they compare):

* ``gpukernsum`` groups by (name, grid, block) over all devices; traceforge's ``kernel_summary`` groups by
  (device, name). Counts, totals, min and max sum/fold exactly; median and stddev only compare for names
  with a single (grid, block) group. nsys rounds averages, medians and stddevs to 0.1 ns.
* ``gpumemtimesum`` names operations ``[CUDA memcpy HtoD]`` ... ``[CUDA memset]`` over all devices.
* ``nvtxgpuproj`` counts *API calls* (``count(DISTINCT correlationId)``, traceforge's ``launch_count``), lists
  only ranges that launched GPU work, skips start/end ranges that end on another thread, requires the whole
  API call ``[start, end]`` inside the closed range (traceforge: the call's start inside ``[start, end)``),
  and its ``Lvl`` counts start/end ranges as parents too (traceforge's ``level`` is push/pop nesting only).
* ``kernexecsum``/``kernexectrace`` join kernels to API calls on (pid, correlationId) as traceforge does, and
  strip a ``_vNNNN`` suffix from API names.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

#: Reports run by default (kernexectrace is large, ask for it explicitly).
DEFAULT_REPORTS = ("gpukernsum", "gpumemtimesum", "nvtxgpuproj", "kernexecsum")

WANTED_VERSION = "2022.4"

_cache: dict[tuple[str, tuple[str, ...]], dict[str, Optional[list[dict[str, Any]]]]] = {}


def find_nsys() -> Optional[str]:
    """Path of an nsys 2022.4 (Debian's package), or None."""
    for candidate in (os.environ.get("TRACEFORGE_TEST_NSYS"), shutil.which("nsys"), "/usr/bin/nsys"):
        if candidate and os.path.exists(candidate) and WANTED_VERSION in nsys_version(candidate):
            return candidate
    return None


def nsys_version(nsys: str) -> str:
    """What ``nsys --version`` prints (empty when it fails)."""
    try:
        proc = subprocess.run([nsys, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip()


def _number(text: str) -> Any:
    if text in ("", "None"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*(e[-+]?\d+)?", text):
        return float(text)
    return text


def parse_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of an ``nsys stats --format csv`` file, numbers converted; header names as nsys prints them."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [{k: _number(v) for k, v in row.items()} for row in reader]


def run_stats(
    export: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    reports: tuple[str, ...] = DEFAULT_REPORTS,
    nsys: Optional[str] = None,
) -> dict[str, Optional[list[dict[str, Any]]]]:
    """Run ``nsys stats`` on ``export`` and return {report: rows} (None where nsys skipped the report).

    The export is copied into ``cache_dir`` first so nsys never touches the caller's file.
    """
    nsys = nsys or find_nsys()
    if nsys is None:
        raise RuntimeError("nsys 2022.4 not found (scripts/install-nsys.sh installs it)")
    with open(export, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    key = (digest, tuple(reports))
    if key in _cache:
        return _cache[key]
    workdir = Path(cache_dir) / f"nsys-{digest}"
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / "export.sqlite"
    if not copy.exists():
        shutil.copyfile(export, copy)
    proc = subprocess.run(
        [
            nsys,
            "stats",
            "--report",
            ",".join(reports),
            "--format",
            "csv",
            "--output",
            str(workdir / "out"),
            "--force-overwrite",
            "true",
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    result: dict[str, Optional[list[dict[str, Any]]]] = {}
    for report in reports:
        path = workdir / f"out_{report}.csv"
        result[report] = parse_csv(path) if path.exists() else None
    if proc.returncode != 0 and all(v is None for v in result.values()):
        raise RuntimeError(f"nsys stats failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    _cache[key] = result
    return result


#: ``gpumemtimesum`` operation names (nsysstats.MEM_OPER_STRS_CTE) -> (op, copy_kind) of memop_summary.
MEMOP_NAMES = {
    "[CUDA memcpy HtoD]": ("memcpy", "HtoD"),
    "[CUDA memcpy DtoH]": ("memcpy", "DtoH"),
    "[CUDA memcpy DtoD]": ("memcpy", "DtoD"),
    "[CUDA memcpy HtoH]": ("memcpy", "HtoH"),
    "[CUDA memcpy PtoP]": ("memcpy", "PtoP"),
    "[CUDA memcpy HtoA]": ("memcpy", "HtoA"),
    "[CUDA memcpy AtoH]": ("memcpy", "AtoH"),
    "[CUDA memcpy AtoA]": ("memcpy", "AtoA"),
    "[CUDA memcpy AtoD]": ("memcpy", "AtoD"),
    "[CUDA memcpy DtoA]": ("memcpy", "DtoA"),
    "[CUDA Unified Memory memcpy HtoD]": ("memcpy", "UVM_HtoD"),
    "[CUDA Unified Memory memcpy DtoH]": ("memcpy", "UVM_DtoH"),
    "[CUDA Unified Memory memcpy DtoD]": ("memcpy", "UVM_DtoD"),
    "[CUDA memcpy Unknown]": ("memcpy", "Unknown"),
    "[CUDA memset]": ("memset", "memset"),
}


def strip_api_version(name: str) -> str:
    """``cudaLaunchKernel_v7000`` -> ``cudaLaunchKernel``, the way nsys' reports shorten API names."""
    return name[:-6] if len(name) >= 6 and name[-6:-4] == "_v" else name
