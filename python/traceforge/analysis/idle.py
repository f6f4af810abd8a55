"""Idle attribution (``device_metrics.idle_*_ns``) summed per sweep cell and per N, and its split in %.

A cell's idle time is that of its linked trace (``cells.trace_id``), summed over the trace's devices; cells
without a stored trace, or whose trace has no idle attribution (NULL: stored before metric version 3), have
none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..store.sql_params import bind

if TYPE_CHECKING:
    from ..store import Store

#: The six idle states and their ``device_metrics`` columns, in the schema's order.
STATES: tuple[tuple[str, str], ...] = (
    ("sync", "idle_sync_ns"),
    ("gil_wait", "idle_gil_wait_ns"),
    ("os", "idle_os_ns"),
    ("cuda_api", "idle_cuda_api_ns"),
    ("other", "idle_other_ns"),
    ("unattributed", "idle_unattributed_ns"),
)
COLUMNS = tuple(c for _, c in STATES)
#: The flat columns :func:`split` adds to a cell or N row.
SPLIT_COLUMNS = ("idle_ms", *(f"{s}%" for s, _ in STATES))


def _has_tables(store: Store, *names: str) -> bool:
    row = store.con.execute(
        bind(
            "SELECT count(DISTINCT table_name) FROM information_schema.tables WHERE table_name IN ("
            + ", ".join("?" for _ in names)
            + ")",
            list(names),
        )
    ).fetchone()
    return bool(row and row[0] == len(names))


def split(values: dict[str, int] | None) -> dict[str, float | None]:
    """``{idle_ms, sync%, gil_wait%, ...}``: total idle in ms and each state's share of it in %."""
    if values is None:
        return dict.fromkeys(SPLIT_COLUMNS)
    total = sum(values.values())
    out: dict[str, float | None] = {"idle_ms": total / 1e6}
    for s, _ in STATES:
        out[f"{s}%"] = 100.0 * values.get(s, 0) / total if total else None
    return out


def _sums_sql() -> str:
    return ", ".join(f"sum(d.{c})" for c in COLUMNS)


def idle_by_cell(store: Store, run_id: str) -> dict[str, dict[str, int]]:
    """``{cell_id: {state: ns}}`` for the cells of ``run_id`` whose linked trace has idle attribution."""
    if not _has_tables(store, "cells", "device_metrics"):
        return {}
    rows = store.con.execute(
        bind(
            f"SELECT c.cell_id, {_sums_sql()} FROM cells c JOIN device_metrics d ON d.trace_id = c.trace_id "
            "AND d.idle_other_ns IS NOT NULL WHERE c.run_id = ? GROUP BY c.cell_id",
            [run_id],
        )
    ).fetchall()
    return {str(r[0]): {s: int(v or 0) for (s, _), v in zip(STATES, r[1:])} for r in rows}


def idle_by_n(
    store: Store, config: Mapping[str, Any], run_ids: Sequence[str]
) -> list[tuple[int, int, dict[str, int]]]:
    """Per N of a sweep: (n, linked traces with idle attribution, idle states summed over them and devices).

    Cells are the ``ok`` ones of one configuration (``config``: ``cells`` column -> value, None for NULL)
    in ``run_ids`` (all runs when empty).
    """
    if not _has_tables(store, "cells", "device_metrics"):
        return []
    present = {str(r[0]) for r in store.con.execute("SELECT column_name FROM (DESCRIBE cells)").fetchall()}
    conds, params = ["c.status = 'ok'"], []
    for col, val in config.items():
        if col not in present:
            continue  # an older store: every cell is of the one configuration it can tell
        if val is None:
            conds.append(f"c.{col} IS NULL")
        else:
            conds.append(f"c.{col} = ?")
            params.append(val)
    if run_ids:
        conds.append("c.run_id IN (" + ", ".join("?" for _ in run_ids) + ")")
        params.extend(run_ids)
    rows = store.con.execute(
        bind(
            f"SELECT c.n, count(DISTINCT d.trace_id), {_sums_sql()} FROM cells c JOIN device_metrics d "
            f"ON d.trace_id = c.trace_id AND d.idle_other_ns IS NOT NULL WHERE {' AND '.join(conds)} "
            "GROUP BY c.n ORDER BY c.n",
            params,
        )
    ).fetchall()
    return [(int(r[0]), int(r[1]), {s: int(v or 0) for (s, _), v in zip(STATES, r[2:])}) for r in rows]
