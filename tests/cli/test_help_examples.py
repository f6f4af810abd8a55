"""Every command's ``--help`` ends with an example that parses, the docs list every command with its
examples, and the help texts that were wrong say what the commands do (issue 16, item 14)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import duckdb
import pytest

from traceforge.cli import COMMANDS, cli
from traceforge.cli.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_ends_with_an_example(name: str, run_cli: Any) -> None:
    result = run_cli(name, "--help")
    assert result.rc == 0, str(result)
    assert re.search(r"^  Examples?:$", result.stdout, re.M), result.stdout
    for example in EXAMPLES[name]:
        assert example in result.stdout, f"{example!r} missing or rewrapped"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_example_parses_with_the_commands_options(name: str) -> None:
    ctx = click.Context(cli)
    command = cli.get_command(ctx, name)
    assert command is not None
    for example in EXAMPLES[name]:
        words = shlex.split(example)
        assert words[:2] == ["traceforge", name], example
        try:
            command.make_context(name, words[2:], parent=ctx)
        except click.UsageError as exc:  # an unknown option, a bad choice, a missing argument
            pytest.fail(f"{example!r}: {exc.format_message()}")


def test_the_docs_list_every_command_with_its_examples() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = (ROOT / "docs" / "commands.md").read_text()
    for name in COMMANDS:
        assert f"traceforge {name}" in readme, f"README lacks `traceforge {name}`"
        assert f"## `traceforge {name}`" in commands, f"docs/commands.md lacks a section for {name}"
        for example in EXAMPLES[name]:
            assert example in commands, f"docs/commands.md lacks the example {example!r}"


def test_demo_uses_the_store_its_help_names(tmp_path: Path, run_cli: Any) -> None:
    """``demo --db``'s help says the default store is ``$TRACEFORGE_DB`` (or ./traceforge.duckdb): it is."""
    help_text = " ".join(run_cli("demo", "--help").stdout.split())
    assert "default: $TRACEFORGE_DB or ./traceforge.duckdb" in help_text
    env_db = tmp_path / "from-env.duckdb"
    work = tmp_path / "cwd"
    work.mkdir()
    env = {"TRACEFORGE_DB": str(env_db), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_cli("demo", env=env, cwd=work)
    assert result.rc == 0, str(result)
    assert env_db.exists() and not (work / "traceforge.duckdb").exists()
    con = duckdb.connect(str(env_db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM traces").fetchone() == (1,)
    finally:
        con.close()
    assert result.stdout.rstrip().splitlines()[-1].endswith(f"--db {env_db}"), result.stdout


def test_report_window_help_says_what_the_default_window_is(
    tmp_path: Path, small_matmul_export: Path, llama_export: Path, run_cli: Any
) -> None:
    """The help promised "the first 2000 kernels"; the default window is the densest run of 400."""
    import traceforge
    from traceforge.report import plots

    help_text = " ".join(run_cli("report", "--help").stdout.split())
    n = plots.DEFAULT_WINDOW_KERNELS
    assert f"the densest {n} consecutive kernels" in help_text
    assert "2000" not in help_text
    with traceforge.connect(tmp_path / "w.duckdb") as tf:
        [outcome] = tf.ingest([llama_export])
        win = plots.choose_window(tf.store, outcome.trace_id)
        assert win is not None
        inside, total = tf.store.con.execute(
            "SELECT count(*) FILTER (WHERE start_ns >= ? AND end_ns <= ?), count(*) FROM kernels "
            "WHERE trace_id = ? AND device_id = ?",
            [win.start_ns, win.end_ns, outcome.trace_id, win.device_id],
        ).fetchone()
    assert total > n and inside >= n
