"""Writing one output file safely: the one way ``report``, ``plot`` and every ``export`` write a file.

:func:`atomic_output` hands out a temporary file beside the target and renames it onto the target only
once the block finished, so a reader never sees half a file and a failure leaves the old file as it was.
It refuses a target that is a directory, a FIFO, a device or a socket (replacing one is never what
``--output`` meant: ``--output /dev/full`` as root replaced the device node), keeps a regular file's mode
(and, where allowed, its owner), and writes through a symbolic link to the file it points at, keeping
the link.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator

from .errors import OutputError

#: What a path that is not a regular file is, for the message refusing it.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is not a regular file (``"a FIFO (named pipe)"``)."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def output_target(path: str | os.PathLike[str]) -> str:
    """The file an output to ``path`` replaces: ``path`` itself, or the file its symbolic links lead to.

    Raises:
        OutputError: the target is a directory, FIFO, device or socket, or its directory does not exist.
    """
    given = os.fspath(path)
    target = os.path.realpath(given) if os.path.islink(given) else os.path.abspath(given)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"cannot write here: {exc.strerror or exc}", path=given) from exc
    if mode is not None:
        kind = kind_of(mode)
        if kind is not None:
            via = "" if target == os.path.abspath(given) else f" ({target}, where the link points)"
            raise OutputError(f"is {kind}{via}, not a file to write: name a file", path=given)
    if not os.path.isdir(os.path.dirname(target)):
        raise OutputError("the output directory does not exist", path=given)
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[str]:
    """Write an output file atomically: yield a temporary path to write, then rename it onto ``path``.

    The temporary file lies beside the target (same file system, so the rename is atomic); it is removed
    if the block raises, leaving whatever was at ``path`` untouched. The finished file gets the mode (and,
    where the user may set it, the owner) of the regular file it replaces, else the mode a new file gets
    under the umask. When ``path`` is a symbolic link, the file it points at is replaced and the link kept.

    Args:
        path: the output the user named.
        suffix: ending of the temporary file's name (e.g. ``".svg"`` for writers that pick the format from
            the name).

    Yields:
        The temporary file's path (it exists, empty, when the block starts).

    Raises:
        OutputError: the target is a directory, FIFO, device or socket, its directory does not exist, or
            writing or renaming failed (nothing was replaced).
    """
    given = os.fspath(path)
    target = output_target(given)
    directory, name = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{suffix}", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write here: {exc.strerror or exc}", path=given) from exc
    os.close(fd)
    try:
        yield tmp
        try:
            old = os.stat(target)
        except FileNotFoundError:
            old = None
        if old is not None:
            if kind_of(old.st_mode) is not None:  # swapped for a FIFO or device meanwhile: still refused
                raise OutputError(f"is {kind_of(old.st_mode)}, not a file to write: name a file", path=given)
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            with contextlib.suppress(OSError):  # only root may give a file away; others keep their own
                os.chown(tmp, old.st_uid, old.st_gid)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write the file: {exc.strerror or exc}", path=given) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
