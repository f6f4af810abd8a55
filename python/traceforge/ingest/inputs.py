"""What the user typed -> the files to ingest: the one input expander, and the check of one input file.

Both the API (``Traceforge.ingest``) and ``traceforge ingest`` expand their inputs here, so they pick the
same files from the same folder.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import (
    InputChangedError,
    InputNotFoundError,
    InputPermissionError,
    NotAnExportError,
    TraceforgeError,
)
from ..outputs import kind_of

#: File name endings picked up when a directory is expanded: nsys exports and reports, ncu CSV exports.
EXPORT_SUFFIXES: tuple[str, ...] = (".sqlite", ".nsys-rep", ".csv")

_GLOB_CHARS = frozenset("*?[")


@dataclass
class Expansion:
    """The files a batch will process, and the inputs that named no usable file.

    Attributes:
        paths: absolute paths of the files, sorted, each once.
        problems: ``(input, error)`` for every input that cannot be processed, in input order.
        skipped: ``(path, why)`` for every file a directory or pattern reached that is recognisably not a
            capture (an ``nsys stats`` CSV), sorted: left out with a note, not a failure.
        excluded: absolute paths of the files (and directories not searched) ``exclude`` left out, sorted.
    """

    paths: list[str] = field(default_factory=list)
    problems: list[tuple[str, TraceforgeError]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


#: Why an ``nsys stats`` CSV found in a directory is left out.
NSYS_STATS_CSV = "an nsys stats CSV, not an Nsight Compute export"

#: A column of ``nsys stats --format csv``: a name and its unit: ``Time (%)``, ``Start (ns)``, ``Total (MB)``.
_STATS_COLUMN = re.compile(r"\((?:%|ns|us|ms|s|B|KB|MB|GB|KiB|MiB|GiB)\)$")


def is_nsys_stats_csv(path: str) -> bool:
    """Whether ``path`` is a report table written by ``nsys stats --format csv`` (not an ncu export).

    Its header row names columns with their units (``Time (%)``, ``Total Time (ns)``, ``Start (ns)``,
    ``Total (MB)``); an ncu export's has ``ID`` and ``Kernel Name`` and puts units in a row of their own.
    The first few non-blank lines are looked at, since ``nsys stats`` printing to a terminal writes a
    `` ** Report name`` line above the table.
    """
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    lines = [ln for ln in head.splitlines() if ln.strip()][:8]
    for row in csv.reader(lines):
        if "ID" in row and "Kernel Name" in row:
            return False
        if len(row) >= 2 and any(_STATS_COLUMN.search(c.strip()) for c in row):
            return True
    return False


def _excluded(patterns: tuple[str, ...], relative: str) -> bool:
    """Whether ``--exclude`` patterns match a path relative to the searched directory, or its last name."""
    relative = relative.replace(os.sep, "/")
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _glob_root(pattern: str) -> str:
    """The directory a glob pattern searches: its leading components without ``*``, ``?`` or ``[``."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or ("/" if pattern.startswith(os.sep) else ".")


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], exclude: Iterable[str] = ()) -> Expansion:
    """Expand files, directories (recursively) and glob patterns into the files to ingest.

    A directory contributes its ``.sqlite``, ``.nsys-rep`` and ncu ``.csv`` files, recursively, skipping
    hidden entries and a ``.nsys-rep`` whose ``.sqlite`` export lies beside it (the export is that report's
    content). A pattern (``*``, ``?``, ``[``; ``**`` crosses directories) contributes every file it matches;
    a file named explicitly is taken whatever its name. The same file reached twice is listed once.

    Files a directory or pattern reaches are left out when an ``exclude`` glob matches their path relative
    to that directory (for a pattern, its leading fixed directories), or their file name (a directory
    matched so is not searched); or with a note in ``skipped`` when they are recognisably not captures (an
    ``nsys stats`` CSV). A file named explicitly is neither: it gets the error its content calls for.

    Args:
        inputs: what the user typed.
        exclude: glob patterns (``fnmatch``: ``*`` also crosses ``/``) of files to leave out.

    Returns:
        The files and the problems (missing paths, patterns matching nothing, dangling links, directories
        where an export was expected).
    """
    result = Expansion()
    seen: set[str] = set()
    patterns = tuple(exclude)

    def add(path: str) -> None:
        absolute = os.path.abspath(path)
        key = os.path.realpath(absolute)
        if key not in seen:
            seen.add(key)
            result.paths.append(absolute)

    def add_found(path: str, root: str) -> bool:
        """Add a file a directory or pattern reached, unless excluded or not a capture; True if added."""
        if patterns and _excluded(patterns, os.path.relpath(path, root)):
            result.excluded.append(os.path.abspath(path))
            return False
        if path.lower().endswith(".csv") and is_nsys_stats_csv(path):
            result.skipped.append((os.path.abspath(path), NSYS_STATS_CSV))
            return False
        add(path)
        return True

    for raw in inputs:
        item = os.fspath(raw)
        if os.path.isdir(item) and item.rstrip(os.sep).endswith(EXPORT_SUFFIXES):
            # ``run.sqlite/`` named on the command line: the user meant a file, not a folder of them.
            result.problems.append((item, NotAnExportError("is a directory, not an nsys export", path=item)))
        elif os.path.isdir(item):
            found = left_out = 0
            problems_before = len(result.problems)
            for path in _walk_exports(item, result.problems, patterns, result.excluded):
                added = add_found(path, item)
                found += added
                left_out += not added
            if not found and not left_out and len(result.problems) == problems_before:
                suffixes = ", ".join(EXPORT_SUFFIXES)
                result.problems.append(
                    (item, InputNotFoundError(f"no {suffixes} file in this directory", path=item))
                )
        elif os.path.isfile(item):
            add(item)
        elif (kind := _special_kind(item)) is not None:
            result.problems.append((item, not_regular(item, kind)))
        elif os.path.islink(item):
            result.problems.append((item, _dangling(item)))
        elif _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                result.problems.append((item, InputNotFoundError("no file matches this pattern", path=item)))
            for match in matches:
                if os.path.isfile(match):
                    add_found(match, _glob_root(item))
                elif os.path.isdir(match):
                    result.problems.append(
                        (match, NotAnExportError("is a directory, not an nsys export", path=match))
                    )
                elif (kind := _special_kind(match)) is not None:
                    result.problems.append((match, not_regular(match, kind)))
                else:
                    result.problems.append((match, _dangling(match)))
        else:
            result.problems.append((item, InputNotFoundError("no such file or directory", path=item)))
    result.paths.sort()
    result.skipped.sort()
    result.excluded.sort()
    return result


def _walk_exports(
    root: str,
    problems: list[tuple[str, TraceforgeError]],
    exclude: tuple[str, ...] = (),
    excluded: list[str] | None = None,
) -> Iterator[str]:
    def on_error(exc: OSError) -> None:
        where = exc.filename or root
        problems.append((where, InputPermissionError(f"cannot list directory: {exc.strerror}", path=where)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if exclude:
            pruned = [
                d for d in dirnames if _excluded(exclude, os.path.relpath(os.path.join(dirpath, d), root))
            ]
            if excluded is not None:
                excluded.extend(os.path.abspath(os.path.join(dirpath, d)) for d in pruned)
            dirnames[:] = [d for d in dirnames if d not in pruned]
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
            kind = _special_kind(path)
            if kind is not None:  # a FIFO would block the walk's first read, /dev/zero never end it
                problems.append((path, not_regular(path, kind)))
                continue
            yield path


def _dangling(path: str) -> InputNotFoundError:
    try:
        target = os.readlink(path)
    except OSError:
        return InputNotFoundError("no such file", path=path)
    return InputNotFoundError(f"broken symbolic link (its target {target} does not exist)", path=path)


def _special_kind(path: str) -> str | None:
    """What ``path`` is when it exists (links followed) and is neither a regular file nor a directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISDIR(mode) else kind_of(mode)


def not_regular(path: str, kind: str) -> NotAnExportError:
    """The refusal of an input that is not a regular file: a FIFO, a device, a socket."""
    return NotAnExportError(f"is {kind}, not a regular file (only regular files are read)", path=path)


def check_input(path: str) -> None:
    """Raise a clear error for a path that cannot be an input file: only regular files are read."""
    if not os.path.lexists(path):
        raise InputNotFoundError("no such file", path=path)
    if not os.path.exists(path):
        raise InputNotFoundError("dangling symbolic link", path=path)
    if os.path.isdir(path):
        raise NotAnExportError("is a directory, not an nsys export", path=path)
    kind = _special_kind(path)
    if kind is not None:
        raise not_regular(path, kind)
    if not os.access(path, os.R_OK):
        raise InputPermissionError("permission denied", path=path)


@dataclass(frozen=True)
class FileIdentity:
    """What an input file looked like before it was read: a change to any field means it was rewritten."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int


def file_identity(path: str) -> FileIdentity:
    """The identity of the regular file at ``path`` (links followed), taken before it is hashed or read."""
    st = os.stat(path)
    return FileIdentity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def changed_since(path: str, before: FileIdentity) -> bool:
    """Whether the file at ``path`` is no longer what ``before`` describes (or is gone)."""
    try:
        return file_identity(path) != before
    except OSError:
        return True


def check_unchanged(path: str, before: FileIdentity) -> None:
    """Refuse a file that changed while it was read: its bytes and its fingerprint may be of two versions.

    Raises:
        InputChangedError: its size, modification or change time, or inode differ from ``before``.
    """
    if changed_since(path, before):
        raise InputChangedError(
            "changed while it was read (another program is writing it); nothing of it was stored: "
            "ingest it again once it is complete",
            path=path,
        )
