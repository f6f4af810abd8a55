"""Ctrl-C during long native work: seen at once, answered by stopping the work, never lost or half-done.

Python runs its SIGINT handler only between bytecodes of the main thread, so a multi-second call into the
Rust core (hashing, reading an export) made from the main thread would hold Ctrl-C back until it returned.
:func:`interruptible` runs such a call on a helper thread and waits for it where Ctrl-C lands at once, then
stops the work through its cancel flag. :func:`interrupts_deferred` holds Ctrl-C back over the few
statements that must not be cut in two (a commit and the record that it happened), and
:func:`restore_ctrl_c` makes Ctrl-C work in a process that inherited it ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def interruptible(work: Callable[[], T], cancel: Callable[[], None]) -> T:
    """Run ``work`` (native code that releases the GIL) so that Ctrl-C stops it at once.

    In the main thread, ``work`` runs on a helper thread; Ctrl-C while waiting calls ``cancel`` (which
    must make ``work`` return soon, e.g. by setting its cancel token), waits for ``work`` to end and raises
    ``KeyboardInterrupt``. Elsewhere (worker threads, which never receive signals) it runs ``work`` in place.

    Raises:
        KeyboardInterrupt: Ctrl-C; ``work`` was stopped.
    """
    if not _in_main_thread():
        return work()
    pool = ThreadPoolExecutor(1, thread_name_prefix="traceforge-native")
    try:
        future = pool.submit(work)
        try:
            return future.result()
        except KeyboardInterrupt:
            cancel()
            with contextlib.suppress(BaseException):  # its own error (interrupted) is this Ctrl-C
                future.result()
            raise
    finally:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs; deliver it (``KeyboardInterrupt``) once the block completed.

    For a commit and the bookkeeping that says it happened: Ctrl-C between the two would make the message
    say "rolled back" about a trace that was stored. Outside the main thread, or when SIGINT has no Python
    handler, the block runs as it is.
    """
    previous = signal.getsignal(signal.SIGINT)
    if not _in_main_thread() or not callable(previous):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        previous(signal.SIGINT, None)  # the handler that was there: it raises KeyboardInterrupt
        raise KeyboardInterrupt  # (a handler that did not raise: Ctrl-C still stops the ingest)


_received = False


def _on_sigint(signum: int, frame: object) -> None:
    """Python's own SIGINT behaviour (``KeyboardInterrupt``), remembering that Ctrl-C came."""
    global _received
    _received = True
    raise KeyboardInterrupt


def restore_ctrl_c() -> None:
    """Make SIGINT raise ``KeyboardInterrupt``, even when this process inherited it ignored.

    It is remembered too (:func:`ctrl_c_received`). A command started in the background by a
    non-interactive shell (``traceforge ingest x &`` in a script) inherits SIGINT ignored, and Python
    then leaves it ignored: ``kill -INT`` and Ctrl-C did nothing and the ingest ran to the end.
    traceforge promises that Ctrl-C stops it (exit 130).
    """
    if _in_main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def ctrl_c_received() -> bool:
    """Whether Ctrl-C came since :func:`restore_ctrl_c`.

    An error raised meanwhile may be its effect (a module whose initialisation it cut short fails to
    import), to be reported as the interruption.
    """
    return _received
