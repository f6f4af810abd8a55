"""One example command line per subcommand, shown at the end of its ``--help`` (issue 16).

Kept apart from the commands so every ``--help`` gets one even where a command's docstring has none, and
so ``docs/commands.md`` and the tests can read them: each example must parse with its command's own
options (``tests/cli/test_help_examples.py``).
"""

from __future__ import annotations

#: subcommand -> example command lines (a shell would run them as shown).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "ingest": ("traceforge ingest runs/ --db runs.duckdb --exclude 'stats/*' --jobs 4",),
    "sql": (
        'traceforge sql --db runs.duckdb "SELECT name, count, total_ns FROM kernel_summary '
        'ORDER BY total_ns DESC LIMIT 5"',
        'traceforge sql --db runs.duckdb --format line "SELECT * FROM device_metrics"',
    ),
    "traces": ("traceforge traces --db runs.duckdb --format csv",),
    "rm": ("traceforge rm --db runs.duckdb small_matmul.sqlite 3f2a9c",),
    "demo": ("traceforge demo --db /tmp/demo.duckdb",),
    "synth": ("traceforge synth --out big.sqlite --kernels 1000000 --devices 2 --streams 4",),
    "run": ("traceforge run runners/tr131_gpu_smoke.toml --db sweep.duckdb --dry-run",),
    "runs": (
        "traceforge runs --db sweep.duckdb --all",
        "traceforge runs --db sweep.duckdb --run tr131-smoke",
    ),
    "reanalyze": ("traceforge reanalyze --db runs.duckdb --trace llama1b_n1.sqlite",),
    "export": ("traceforge export --db runs.duckdb --format parquet --output dataset/ --trace small_matmul",),
    "compare": (
        "traceforge compare --db sweep.duckdb --metric device_metrics.busy_ns --by cells.n --baseline 1",
    ),
    "diff": ("traceforge diff --db runs.duckdb llama_n1.sqlite llama_n8.sqlite --top 5",),
    "report": (
        "traceforge report --db runs.duckdb --trace llama_n1.sqlite --window 0:50 --output report.html",
    ),
    "plot": (
        "traceforge plot gaps --db runs.duckdb --trace small_matmul.sqlite --output gaps.svg",
        "traceforge plot sweep --db sweep.duckdb --output sweep.png",
    ),
    "sweep": ("traceforge sweep --db sweep.duckdb --format csv",),
}


def epilog(command: str) -> str | None:
    """The ``--help`` epilog of ``command``: its examples, laid out as written (click's no-rewrap mark)."""
    lines = EXAMPLES.get(command)
    if not lines:
        return None
    heading = "Example:" if len(lines) == 1 else "Examples:"
    return "\b\n" + heading + "\n" + "\n".join(f"  {line}" for line in lines)
