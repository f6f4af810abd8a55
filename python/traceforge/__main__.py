"""``python -m traceforge`` and the ``traceforge`` script: the CLI, with Ctrl-C answered from the start.

Everything the command does, its imports included, runs inside :func:`entry`'s handler, so that Ctrl-C in
the first instants (while click and the command load) ends the program with one line and exit 130, not a
traceback. (``import traceforge``, which runs before, imports nothing: its names are looked up lazily.)
"""

from __future__ import annotations

import os
import sys

INTERRUPTED = 130


def entry() -> int:
    """Run the ``traceforge`` command line; return its exit code (an interrupted run does not return)."""
    try:
        import signal

        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # see traceforge.interrupts.restore_ctrl_c
            signal.signal(signal.SIGINT, signal.default_int_handler)
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("traceforge: interrupted\n")
        code = INTERRUPTED
    if code == INTERRUPTED:
        _leave_now()
    return code


def _leave_now() -> None:
    """End an interrupted run at once, without the interpreter's shutdown.

    Ctrl-C can land inside a native call (DuckDB opening or creating the store, the core reading) and leave
    it half done; the destructors that shutdown then runs were seen, rarely and under load, to block for
    minutes (the test of a very early SIGINT timed out after 180 s). Nothing is lost by skipping them: a
    transaction is either committed (DuckDB's write-ahead log has it, replayed at the next open, read-only
    included) or was never written, and the message is flushed first.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(INTERRUPTED)


if __name__ == "__main__":
    sys.exit(entry())
