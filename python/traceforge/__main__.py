"""``python -m traceforge`` and the ``traceforge`` script: the CLI, with Ctrl-C answered from the start.

The command line's modules are imported here, inside the handler, so that Ctrl-C in the first instants
(while click and the command load) ends the program with the one-line message and exit 130, not a traceback.
"""

from __future__ import annotations

import sys


def entry() -> int:
    """Run the ``traceforge`` command line; return its exit code."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # see traceforge.interrupts.restore_ctrl_c
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("traceforge: interrupted\n")
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(entry())
