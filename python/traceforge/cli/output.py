"""Printing query results: ``table``, ``line``, ``csv`` and ``json``, for every column type.

The frame comes from ``Store.sql`` (unique column names, types polars can hold); the values are written by
``store.result`` (``json_value``, ``cell_text``), the one conversion the API and the CLI share.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

import click

FORMATS = ["table", "line", "csv", "json"]

#: Rows a table shows unless ``--limit`` says otherwise (the others print every row).
TABLE_ROWS = 200

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table; line (one `column = value` line per column, a blank line between records); csv; json.",
)
limit_option = click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help=f"Print at most N rows (0: all; default: {TABLE_ROWS} for table, all otherwise).",
)


def emit(df: Any, fmt: str, limit: int | None = None) -> None:
    """Print ``df`` in ``fmt``; rows beyond ``limit`` are left out, and how many is said."""
    if limit is None:
        limit = TABLE_ROWS if fmt == "table" else 0
    shown = df.head(limit) if limit and df.height > limit else df
    omitted = df.height - shown.height
    if fmt == "csv":
        from ..store.result import text_frame

        sys.stdout.write(text_frame(shown).write_csv())
    elif fmt == "json":
        from ..store.result import json_value

        rows = [{k: json_value(v) for k, v in row.items()} for row in shown.iter_rows(named=True)]
        sys.stdout.write(json.dumps(rows, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    elif fmt == "line":
        sys.stdout.write(line_layout(shown))
    else:
        _table(shown, df.width)
    if omitted:
        note = (
            f"({omitted:,} of {df.height:,} rows not shown; --limit 0 prints them all, "
            "as does --format csv, json or line)"
        )
        if fmt == "table":
            click.echo(note)
        else:
            click.echo(f"traceforge: {note}", err=True)


def line_layout(df: Any) -> str:
    """Each row as ``name = value`` lines, names right-aligned (DuckDB's ``.mode line``), blank-separated."""
    from ..store.result import cell_text

    width = max((len(name) for name in df.columns), default=0)
    records = []
    for row in df.iter_rows():
        lines = [f"{name:>{width}} = {cell_text(value)}" for name, value in zip(df.columns, row)]
        records.append("\n".join(lines) + "\n")
    return "\n".join(records)


def _terminal_width() -> int | None:
    """Columns of the terminal the table goes to; None when stdout is no terminal and $COLUMNS is unset."""
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else None


def _table(df: Any, width_of_result: int) -> None:
    """The polars table with every column and every character; too wide for the terminal: line layout."""
    import polars as pl

    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        fmt_str_lengths=1 << 20,
        fmt_table_cell_list_len=-1,
        tbl_width_chars=65535,  # the most polars takes
        fmt_float="full",
    ):
        text = str(df)
    available = _terminal_width()
    widest = max((len(line) for line in text.splitlines()), default=0)
    if available is not None and widest > available and df.height > 0:
        click.echo(
            f"traceforge: the table is {widest} characters wide, the terminal {available}: "
            "shown one column per line (--format line)",
            err=True,
        )
        sys.stdout.write(line_layout(df))
        return
    click.echo(text)
