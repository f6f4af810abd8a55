"""The ``traceforge`` command line: a thin layer over the Python API.

Subcommands live in their own modules and are imported only when invoked, so ``traceforge --help`` stays
instant and ``ingest`` never pays for matplotlib or scipy.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

#: subcommand name -> "module:function" (relative to traceforge.cli), loaded on first use.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("core_cmds:ingest", "Ingest nsys exports (.sqlite/.nsys-rep) and ncu CSV files."),
    "sql": ("core_cmds:sql", "Run a SQL query against the store."),
    "traces": ("core_cmds:traces", "List the stored traces."),
    "rm": ("core_cmds:rm", "Remove traces and every row of theirs from the store."),
    "demo": ("demo_cmd:demo", "Ingest the bundled real H100 capture and show its metrics."),
    "synth": ("synth_cmd:synth", "Write a synthetic nsys export of any size."),
    "run": ("run_cmd:run", "Run a load sweep specified in a TOML file."),
    "runs": ("run_cmd:runs", "Show stored runs and per-cell summaries."),
    "reanalyze": ("batch_cmd:reanalyze", "Recompute derived metrics from stored events."),
    "export": ("export_cmd:export", "Export the store as Parquet, or a trace as a Perfetto timeline."),
    "compare": ("stats_cmd:compare", "Compare groups of traces, cells or requests with statistics."),
    "diff": ("stats_cmd:diff", "Show two stored traces side by side."),
    "report": ("stats_cmd:report", "Write a self-contained HTML report."),
    "plot": ("stats_cmd:plot", "Write one figure as PNG or SVG."),
    "sweep": ("stats_cmd:sweep", "Analyse a stored sweep: throughput, efficiency, breakdown boundary."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand name, sorted."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import the subcommand's module on first use."""
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(f"traceforge.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("traceforge.cli."):
                return None  # not built yet in this checkout
            raise
        command: click.Command = getattr(module, attr)
        if not command.epilog:
            from .examples import epilog

            command.epilog = epilog(cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands with their one-line help without importing their modules."""
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version_text() -> str:
    from .. import __version__

    try:
        from .._core import build_info

        info = build_info()
        return f"traceforge {__version__} (core {info['core_version']}, SQLite {info['sqlite_version']})"
    except ImportError:
        return f"traceforge {__version__} (core extension not built)"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(message="%(version)s", version=None, package_name="traceforge", prog_name="traceforge")
def cli() -> None:
    """traceforge: fast, correct answers from Nsight Systems and Nsight Compute captures."""


# click's version_option formats %(version)s from package metadata; replace it with the richer line.
for _param in cli.params:
    if isinstance(_param, click.Option) and "--version" in _param.opts:

        def _print_version(ctx: click.Context, _p: Any, value: bool) -> None:
            if value and not ctx.resilient_parsing:
                click.echo(_version_text())
                ctx.exit()

        _param.callback = _print_version


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``traceforge`` script: errors become one line on stderr and a non-zero exit.

    Called as the program (``argv`` None), a command that finished its work with nothing left to release
    (see :func:`skip_teardown`) ends the process at once instead of returning.
    """
    from ..interrupts import restore_ctrl_c

    restore_ctrl_c()
    try:
        code = _run(argv)
    except KeyboardInterrupt:  # Ctrl-C between the command's own handlers and here
        click.echo("traceforge: interrupted", err=True)
        code = 130
    if argv is None:
        # The command is done (its results committed, its message printed): a Ctrl-C from now on must not
        # turn into a traceback or another exit code while the process ends.
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if _teardown_skippable:
            _exit_now(code)
    return code


def _run(argv: list[str] | None) -> int:
    from ..errors import IngestInterrupted, TraceforgeError, is_interruption

    try:
        cli.main(args=argv, prog_name="traceforge", standalone_mode=False)
    except IngestInterrupted as exc:
        click.echo(f"traceforge: interrupted: {exc}", err=True)
        return 130
    except click.exceptions.Abort as exc:
        # click turns every KeyboardInterrupt (IngestInterrupted too) into Abort; say what the cause said.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, IngestInterrupted):
            click.echo(f"traceforge: interrupted: {cause}", err=True)
        else:
            click.echo("traceforge: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("traceforge: interrupted (the trace being written was rolled back)", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except TraceforgeError as exc:
        click.echo(f"traceforge: error: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        from ..interrupts import ctrl_c_received

        if is_interruption(exc) or ctrl_c_received():
            # Ctrl-C stopped a DuckDB query (every transaction was rolled back), or cut short what raised
            # this (an import whose initialisation it interrupted).
            click.echo("traceforge: interrupted (the trace being written was rolled back)", err=True)
            return 130
        raise
    return _exit_code


#: Commands that finish with partial failure (e.g. some files of a batch) set this instead of raising.
_exit_code = 0

#: Set by a command whose results are durable and whose resources are released when it returns.
_teardown_skippable = False


def skip_teardown() -> None:
    """Let the program end without the interpreter's teardown once this command returns.

    Finalising modules and DuckDB's globals costs 15-25 ms after every command, a few per cent of a
    typical ingest. Only commands that have closed their store, joined their threads and written their
    output call this; anything registered with ``atexit`` is skipped.
    """
    global _teardown_skippable
    _teardown_skippable = True


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


def set_exit_code(code: int) -> None:
    """Make ``main`` return ``code`` once the command completes."""
    global _exit_code
    _exit_code = code


if __name__ == "__main__":
    sys.exit(main())
