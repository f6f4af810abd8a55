"""``python -m traceforge`` and the ``traceforge`` script: the CLI, with Ctrl-C answered from the start.

Everything the command does, its imports included, runs inside :func:`entry`'s handler, so that Ctrl-C in
the first instants (while click and the command load) ends the program with one line and exit 130, not a
traceback. (``import traceforge``, which runs before, imports nothing: its names are looked up lazily.)
"""

from __future__ import annotations

import sys


def entry() -> int:
    """Run the ``traceforge`` command line; return its exit code."""
    try:
        import signal

        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # see traceforge.interrupts.restore_ctrl_c
            signal.signal(signal.SIGINT, signal.default_int_handler)
        from .cli import main

        return main()
    except KeyboardInterrupt:
        sys.stderr.write("traceforge: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(entry())
