"""Compare groups of stored traces, cells or requests on any numeric metric column.

A metric is ``TABLE.COLUMN`` (``device_metrics.busy_ns``, ``requests.tokens_per_s``); its rows are the
observations. A group is a filter, ``TABLE.COLUMN=VALUE`` (operators ``= != < <= > >=``; several conditions
joined with ``,`` must all hold), on the metric's own table or on any table linked to it. Links follow the
store's keys, never multiplying rows (each condition is a semi-join, ``EXISTS``):

* tables sharing ``trace_id`` (every trace table, ``cells``) match on it, and also on ``device_id`` when
  both have it; tables sharing ``cell_id`` or ``run_id`` (``cells``, ``requests``, ``telemetry``, ``runs``)
  match on those;
* otherwise the link goes through ``cells`` (``cells.trace_id`` ties cells to traces, ``requests.cell_id``
  ties requests to cells).

With two or more groups the first is the baseline and every other group is compared with it; ``by`` makes one
group per distinct value of a column, compared with the ``baseline`` value. All comparisons of all metrics
form one family whose p-values are corrected together (Holm by default).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..store.sql_params import bind
from . import stats

if TYPE_CHECKING:
    from ..store import Store

#: Columns that link tables, in the order they are tried.
LINK_KEYS: tuple[str, ...] = ("cell_id", "run_id", "trace_id", "device_id")
_NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "REAL",
    "DECIMAL",
    "BOOLEAN",
)
_COND = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|!=|<>|=|<|>)\s*(.*?)\s*$"
)


@dataclass(frozen=True)
class Condition:
    """One filter ``table.column OP value``."""

    table: str
    column: str
    op: str
    value: str

    def __str__(self) -> str:
        if self.op == "is null":
            return f"{self.table}.{self.column} is null"
        return f"{self.table}.{self.column}{self.op}{self.value}"


@dataclass(frozen=True)
class Group:
    """A named group: all its conditions must hold."""

    label: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class MetricComparison:
    """One comparison of a family: a metric, the baseline group, the other group, and the statistics."""

    metric: str
    baseline: str
    group: str
    result: stats.Comparison
    p_adjusted: float | None = None
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: identifiers, then the statistics, then the corrected p and the verdict."""
        out: dict[str, Any] = {"metric": self.metric, "baseline": self.baseline, "group": self.group}
        out.update(self.result.to_dict())
        out["p_adjusted"] = self.p_adjusted
        out["verdict"] = self.verdict
        return out


@dataclass(frozen=True)
class GroupDescription:
    """The description of one group on one metric."""

    metric: str
    group: str
    description: stats.Description

    def to_dict(self) -> dict[str, Any]:
        """Flat dict."""
        out: dict[str, Any] = {"metric": self.metric, "group": self.group}
        out.update(self.description.to_dict())
        return out


@dataclass(frozen=True)
class CompareResult:
    """Everything ``traceforge compare`` prints."""

    groups: list[GroupDescription]
    comparisons: list[MetricComparison]
    correction: str
    alpha: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "correction": self.correction,
            "alpha": self.alpha,
            "groups": [g.to_dict() for g in self.groups],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": list(self.notes),
        }


class Schema:
    """The store's tables and column types, read once from DuckDB's catalog."""

    def __init__(self, store: Store) -> None:
        rows = store.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
        self.columns: dict[str, dict[str, str]] = {}
        for table, column, dtype in rows:
            self.columns.setdefault(str(table), {})[str(column)] = str(dtype)

    def column_type(self, table: str, column: str, what: str) -> str:
        """Return the type of ``table.column``; QueryError naming ``what`` when either is unknown."""
        if table not in self.columns:
            known = ", ".join(sorted(self.columns)) or "none"
            raise QueryError(f"unknown table '{table}' in {what} (tables: {known})")
        cols = self.columns[table]
        if column not in cols:
            raise QueryError(
                f"unknown column '{table}.{column}' in {what} (columns of {table}: {', '.join(cols)})"
            )
        return cols[column]

    def keys(self, table: str) -> list[str]:
        """Return the link keys the table has."""
        return [k for k in LINK_KEYS if k in self.columns.get(table, {})]


def _is_numeric(dtype: str) -> bool:
    return dtype.upper().split("(")[0] in _NUMERIC


def parse_metric(text: str, schema: Schema) -> tuple[str, str]:
    """``TABLE.COLUMN`` -> (table, column), checked to exist and be numeric."""
    parts = text.strip().split(".")
    if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise QueryError(f"--metric '{text}' is not TABLE.COLUMN (e.g. device_metrics.busy_ns)")
    table, column = parts
    dtype = schema.column_type(table, column, f"--metric {text}")
    if not _is_numeric(dtype):
        raise QueryError(f"--metric {text}: column is {dtype}, not numeric")
    return table, column


def parse_group(text: str, schema: Schema) -> Group:
    """``cells.n=1,cells.backend=ollama`` -> a :class:`Group` (every condition checked against the schema)."""
    conditions = []
    for part in _split_conditions(text):
        m = _COND.match(part)
        if not m:
            raise QueryError(f"--group '{text}': '{part}' is not TABLE.COLUMN=VALUE (e.g. cells.n=8)")
        table, column, op, value = m.groups()
        schema.column_type(table, column, f"--group {text}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        conditions.append(Condition(table, column, "!=" if op == "<>" else op, value))
    if not conditions:
        raise QueryError(f"--group '{text}' has no condition")
    return Group(text.strip(), tuple(conditions))


def _split_conditions(text: str) -> list[str]:
    # A comma starts a new condition only before TABLE.COLUMN<op>, so values may hold commas.
    pieces = [
        p
        for p in re.split(
            r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\s*(?:<=|>=|!=|<>|=|<|>))", text
        )
        if p.strip()
    ]
    return pieces


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _SqlBuilder:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.params: list[Any] = []
        self._alias = 0

    def alias(self) -> str:
        self._alias += 1
        return f"t{self._alias}"

    def predicate(self, cond: Condition, alias: str) -> str:
        if cond.op == "is null":
            return f"{alias}.{_q(cond.column)} IS NULL"
        dtype = self.schema.columns[cond.table][cond.column]
        self.params.append(cond.value)
        return f"{alias}.{_q(cond.column)} {cond.op} CAST(? AS {dtype})"

    def link(self, outer_table: str, outer_alias: str, cond: Condition) -> str:
        """Build a predicate on ``outer_alias`` (a row of ``outer_table``) requiring ``cond`` on a linked row.

        The row is linked through shared keys, or through ``cells`` when none are shared.
        """
        if cond.table == outer_table:
            return self.predicate(cond, outer_alias)
        shared = self._shared(outer_table, cond.table)
        if shared:
            a = self.alias()
            on = " AND ".join(f"{a}.{k} = {outer_alias}.{k}" for k in shared)
            return f"EXISTS (SELECT 1 FROM {_q(cond.table)} {a} WHERE {on} AND {self.predicate(cond, a)})"
        if "cells" not in self.schema.columns:
            raise QueryError(
                f"cannot link {outer_table} to {cond.table}: no 'cells' table in the store "
                "(no runner results)"
            )
        via = self._shared(outer_table, "cells")
        if not via or not self._shared("cells", cond.table):
            raise QueryError(f"cannot link {outer_table} to {cond.table}: they share no key")
        c = self.alias()
        on = " AND ".join(f"{c}.{k} = {outer_alias}.{k}" for k in via)
        return f"EXISTS (SELECT 1 FROM cells {c} WHERE {on} AND {self.link('cells', c, cond)})"

    def _shared(self, t1: str, t2: str) -> list[str]:
        k1, k2 = self.schema.keys(t1), set(self.schema.keys(t2))
        shared = [k for k in k1 if k in k2]
        # device_id alone is no link (device 0 exists in every trace).
        if shared == ["device_id"]:
            return []
        # A runner table and a trace table share only trace_id through cells; cell_id/run_id rule otherwise.
        if "cell_id" in shared:
            return [k for k in shared if k in ("cell_id", "run_id")]
        return shared


def group_values(
    store: Store, schema: Schema, table: str, column: str, group: Group
) -> tuple[list[Any], int]:
    """Return the metric's values for one group (non-null), and the count of NULL values left out."""
    b = _SqlBuilder(schema)
    m = "m"
    preds = [b.link(table, m, c) for c in group.conditions]
    sql = f"SELECT {m}.{_q(column)} FROM {_q(table)} {m} WHERE " + " AND ".join(preds)
    try:
        rows = store.con.execute(bind(sql, b.params)).fetchall()
    except Exception as exc:  # duckdb.Error, kept lazy
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"--group {group.label}: {text}") from exc
    values = [r[0] for r in rows]
    kept = [float(v) for v in values if v is not None]
    return kept, len(values) - len(kept)


def distinct_values(store: Store, schema: Schema, by: str) -> tuple[str, str, list[Any]]:
    """(table, column, sorted distinct non-null values) of a ``--by`` column."""
    parts = by.strip().split(".")
    if len(parts) != 2:
        raise QueryError(f"--by '{by}' is not TABLE.COLUMN (e.g. cells.n)")
    table, column = parts
    schema.column_type(table, column, f"--by {by}")
    rows = store.con.execute(
        f"SELECT DISTINCT {_q(column)} FROM {_q(table)} WHERE {_q(column)} IS NOT NULL ORDER BY 1"
    ).fetchall()
    return table, column, [r[0] for r in rows]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def verdict(c: stats.Comparison, p_adj: float | None, alpha: float, correction: str) -> str:
    """Read one comparison in plain words."""
    if c.welch_p is None:
        reason = c.notes[0] if c.notes else "test not computable"
        if c.diff == 0:
            return f"no difference: {reason}"
        return f"not testable ({reason}); means differ by {_pct(c.rel_diff) or _num(c.diff)}"
    direction = "higher" if (c.diff or 0) > 0 else "lower"
    size = (
        f"{_pct(abs(c.rel_diff))} {direction}"
        if c.rel_diff is not None
        else f"{_num(abs(c.diff or 0))} {direction}"
    )
    eff = f"{c.effect} effect, d={c.cohens_d:.2f}" if c.cohens_d is not None else "effect size not computable"
    p = p_adj if p_adj is not None else c.welch_p
    label = f"p_adj={_num(p)} ({correction})" if correction != "none" else f"p={_num(p)}"
    if p is not None and p <= alpha:
        return f"{size} ({eff}); significant at alpha={alpha:g}, {label}"
    mde = f"; smallest effect detectable at 80% power with these sizes: d={c.mde_d:.2f}" if c.mde_d else ""
    return f"no significant difference ({label}); observed {size} ({eff}){mde}"


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e6):
        return f"{x:.3g}"
    return f"{x:.4g}"


def compare_groups(
    store: Store,
    metrics: Sequence[str],
    groups: Sequence[str] = (),
    *,
    by: str | None = None,
    baseline: str | None = None,
    correction: str = "holm",
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = stats.DEFAULT_SEED,
    bootstrap_resamples: int = stats.DEFAULT_BOOTSTRAP_RESAMPLES,
) -> CompareResult:
    """Compare groups on one or more metrics; the whole family of p-values is corrected together.

    Args:
        store: an open store.
        metrics: ``TABLE.COLUMN`` names of numeric columns.
        groups: group filters (the first is the baseline); at least two unless ``by`` is given.
        by: ``TABLE.COLUMN`` whose distinct values make the groups.
        baseline: with ``by``, the value of the baseline group (default: the smallest value).
        correction: ``holm``, ``bh`` or ``none``.
        alpha: significance level of the verdicts.
        seed: bootstrap seed.
        bootstrap_resamples: bootstrap resamples per comparison (0 to skip).

    Returns:
        The per-group descriptions and the corrected comparisons.

    Raises:
        QueryError: unknown table or column, non-numeric metric, malformed or empty group, missing baseline.
    """
    if not metrics:
        raise QueryError("give at least one --metric TABLE.COLUMN")
    if correction not in ("holm", "bh", "none"):
        raise QueryError(f"unknown --correction '{correction}' (holm, bh, none)")
    schema = Schema(store)
    parsed_metrics = [parse_metric(m, schema) for m in metrics]
    notes: list[str] = []
    if by is not None:
        if groups:
            raise QueryError("give either --group filters or --by, not both")
        table, column, values = distinct_values(store, schema, by)
        if not values:
            raise QueryError(f"--by {by}: the column has no values")
        labels = [_fmt_value(v) for v in values]
        if baseline is None:
            base_index = 0
        elif baseline in labels:
            base_index = labels.index(baseline)
        else:
            raise QueryError(f"--baseline {baseline} is not a value of {by} (values: {', '.join(labels)})")
        order = [base_index] + [i for i in range(len(values)) if i != base_index]
        group_list = [
            Group(f"{table}.{column}={labels[i]}", (Condition(table, column, "=", labels[i]),)) for i in order
        ]
        strict = False
    else:
        if baseline is not None:
            raise QueryError("--baseline goes with --by")
        if len(groups) < 2:
            raise QueryError("give at least two --group filters (or --by TABLE.COLUMN)")
        group_list = [parse_group(g, schema) for g in groups]
        strict = True

    return compare_parsed(
        store,
        schema,
        parsed_metrics,
        group_list,
        strict=strict,
        correction=correction,
        alpha=alpha,
        seed=seed,
        bootstrap_resamples=bootstrap_resamples,
        notes=notes,
    )


def compare_parsed(
    store: Store,
    schema: Schema,
    metrics: Sequence[tuple[str, str]],
    group_list: Sequence[Group],
    *,
    strict: bool = True,
    correction: str = "holm",
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = stats.DEFAULT_SEED,
    bootstrap_resamples: int = stats.DEFAULT_BOOTSTRAP_RESAMPLES,
    notes: list[str] | None = None,
) -> CompareResult:
    """Compare parsed groups (the first is the baseline) on checked ``(table, column)`` metrics.

    With ``strict``, a group without values is an error; otherwise it is skipped with a note (the baseline
    must always have values).
    """
    notes = [] if notes is None else notes
    descriptions: list[GroupDescription] = []
    pending: list[tuple[str, str, str, stats.Comparison]] = []
    for table, column in metrics:
        metric = f"{table}.{column}"
        values: dict[str, list[float]] = {}
        for g in group_list:
            vals, nulls = group_values(store, schema, table, column, g)
            if nulls:
                notes.append(f"{metric} [{g.label}]: {nulls} NULL value(s) left out")
            if not vals:
                if strict or g is group_list[0]:
                    raise QueryError(f"group '{g.label}' has no rows with a value of {metric}")
                notes.append(f"{metric} [{g.label}]: no rows, group skipped")
                continue
            values[g.label] = vals
            descriptions.append(GroupDescription(metric, g.label, stats.describe(vals)))
        base = group_list[0].label
        for g in group_list[1:]:
            if g.label not in values:
                continue
            res = stats.compare(
                values[base], values[g.label], alpha=alpha, seed=seed, bootstrap_resamples=bootstrap_resamples
            )
            pending.append((metric, base, g.label, res))

    adjusted = stats.adjust([c[3].welch_p for c in pending], correction)
    comparisons = [
        MetricComparison(m, b, g, res, adj, verdict(res, adj, alpha, correction))
        for (m, b, g, res), adj in zip(pending, adjusted)
    ]
    return CompareResult(descriptions, comparisons, correction, alpha, notes)


#: Columns of the comparisons table in text and CSV output.
TABLE_COLUMNS: tuple[str, ...] = (
    "metric",
    "baseline",
    "group",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "diff",
    "rel_diff",
    "diff_ci_low",
    "diff_ci_high",
    "cohens_d",
    "cohens_d_ci_low",
    "cohens_d_ci_high",
    "hedges_g",
    "welch_t",
    "welch_p",
    "p_adjusted",
    "mwu_u",
    "mwu_p",
    "mde_d",
    "verdict",
)
GROUP_COLUMNS: tuple[str, ...] = (
    "metric",
    "group",
    "n",
    "mean",
    "median",
    "sd",
    "cv",
    "ci_low",
    "ci_high",
    "p95",
    "min",
    "max",
)


def render_text_table(rows: list[dict[str, Any]], columns: Sequence[str], *, max_width: int = 70) -> str:
    """Render a plain fixed-width table (no colour codes, so it pipes and tests cleanly).

    Cells wider than ``max_width`` (long demangled kernel names) are cut with an ellipsis.
    """
    cells = [[_clip(_cell(r.get(c)), max_width) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return _num(v)
    return str(v)


def render(result: CompareResult, fmt: str) -> str:
    """Render the result as ``table``, ``csv`` or ``json`` text."""
    import csv
    import io
    import json

    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2)
    comp_rows = [c.to_dict() for c in result.comparisons]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = [k for k in (comp_rows[0].keys() if comp_rows else TABLE_COLUMNS) if k != "notes"]
        w.writerow(cols)
        for r in comp_rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise QueryError(f"unknown --format '{fmt}' (table, csv, json)")
    parts = ["Groups", render_text_table([g.to_dict() for g in result.groups], GROUP_COLUMNS), ""]
    name = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}[result.correction]
    parts.append(
        f"Comparisons (signed b - a; {name} correction over {len(comp_rows)} test(s), alpha={result.alpha:g})"
    )
    parts.append(render_text_table(comp_rows, TABLE_COLUMNS[:-1]))
    parts.append("")
    for r in comp_rows:
        parts.append(f"{r['metric']}: {r['group']} vs {r['baseline']}: {r['verdict']}")
    for note in result.notes:
        parts.append(f"note: {note}")
    return "\n".join(parts)
