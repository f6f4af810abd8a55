"""Which APIs a sweep's nsys traces (``nsys profile -t``), given what the installed nsys supports.

By default a cell is captured with ``cuda,nvtx,osrt`` (the OS runtime calls are the host-side evidence of
why the GPU sat idle) plus ``python-gil`` where the nsys in use has it: the GIL as per-thread ranges is what
attributes idle time to GIL contention. Older nsys releases (2022.4) have no ``python-gil``; then the run
records that it was left out and goes on, rather than failing every cell on an option nsys refuses.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

#: What ``-t`` gets when the spec does not set ``capture.nsys_trace``.
DEFAULT_TRACE = ("cuda", "nvtx", "osrt")

#: Options added to (or kept in) ``-t`` only when the installed nsys lists them.
OPTIONAL_TRACE = ("python-gil",)


@dataclass(frozen=True)
class TraceChoice:
    """The ``-t`` value a run uses, and what was left out of it and why (``None``: nothing was)."""

    trace: str
    note: str | None = None


def trace_options(help_text: str) -> frozenset[str]:
    """The values ``nsys profile --help`` lists for ``-t, --trace=`` (empty when it lists none).

    The help of every nsys release prints them as a quoted list under the ``-t, --trace=`` switch:
    ``Possible values are 'cuda', 'nvtx', ... or 'none'.``, ended by the sentence that follows the list.
    """
    match = re.search(r"-t, --trace=\s*(.*?)(?:\n\s*\n|Select the API)", help_text, re.S)
    if not match:
        return frozenset()
    return frozenset(re.findall(r"'([A-Za-z0-9_-]+)'", match.group(1)))


@functools.lru_cache(maxsize=8)
def supported_trace_options(nsys: str) -> frozenset[str]:
    """The ``-t`` values the nsys binary ``nsys`` accepts (empty when its help cannot be read)."""
    try:
        out = subprocess.run([nsys, "profile", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return trace_options(out.stdout + out.stderr)


def choose_trace(requested: str | None, nsys: str) -> TraceChoice:
    """The ``-t`` value for a run with the nsys binary ``nsys`` (see :func:`choose_from`)."""
    return choose_from(requested, supported_trace_options(nsys), nsys)


def choose_from(requested: str | None, supported: frozenset[str], nsys: str) -> TraceChoice:
    """The ``-t`` value for a run: the spec's ``capture.nsys_trace``, or the default.

    Optional options (``python-gil``) that ``supported`` (what ``nsys`` lists) lacks are dropped, with a
    note saying so; every other option is passed as written (nsys itself refuses what it does not know,
    with its own message). When nothing is known of ``supported``, the value is used unchanged.
    """
    wanted = [t for t in (requested.split(",") if requested else [*DEFAULT_TRACE, *OPTIONAL_TRACE]) if t]
    if not supported:
        return TraceChoice(",".join(wanted))
    dropped = [t for t in wanted if t in OPTIONAL_TRACE and t not in supported]
    kept = [t for t in wanted if t not in dropped]
    if not dropped:
        return TraceChoice(",".join(kept))
    note = (
        f"{', '.join(dropped)} not traced: {nsys} does not support it (its -t accepts "
        f"{', '.join(sorted(supported))}); capture with a newer nsys (2025.3 has it) for GIL evidence"
    )
    return TraceChoice(",".join(kept), note)
