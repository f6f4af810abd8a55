"""What the user typed -> the files to ingest: the one input expander, and the check of one input file.

Both the API (``Traceforge.ingest``) and ``traceforge ingest`` expand their inputs here, so they pick the
same files from the same folder.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import InputNotFoundError, InputPermissionError, NotAnExportError, TraceforgeError

#: File name endings picked up when a directory is expanded: nsys exports and reports, ncu CSV exports.
EXPORT_SUFFIXES: tuple[str, ...] = (".sqlite", ".nsys-rep", ".csv")

_GLOB_CHARS = frozenset("*?[")


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
        problems.append((where, InputPermissionError(f"cannot list directory: {exc.strerror}", path=where)))

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


def check_input(path: str) -> None:
    """Raise a clear error for a path that cannot be an input file."""
    if not os.path.lexists(path):
        raise InputNotFoundError("no such file", path=path)
    if not os.path.exists(path):
        raise InputNotFoundError("dangling symbolic link", path=path)
    if os.path.isdir(path):
        raise NotAnExportError("is a directory, not an nsys export", path=path)
    if not os.access(path, os.R_OK):
        raise InputPermissionError("permission denied", path=path)
