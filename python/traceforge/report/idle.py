"""The report's "Why the GPU was idle" panel: idle attribution per device and per N, GIL wait per thread.

The stacked bars are plain HTML (``<div>`` segments sized in %), not figures: no script, a few hundred bytes
each. Numbers come straight from ``device_metrics`` (``idle_*_ns``) and ``thread_gil``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..store.sql_params import bind

if TYPE_CHECKING:
    from ..store import Store

#: The six idle states, in ``device_metrics`` order: (state, column, colour, phrase for the sentence).
IDLE_STATES: tuple[tuple[str, str, str, str], ...] = (
    ("sync", "idle_sync_ns", "#C44E52", "in CUDA synchronize calls"),
    ("gil_wait", "idle_gil_wait_ns", "#DD8452", "waiting for the GIL"),
    ("os", "idle_os_ns", "#8172B3", "in OS calls"),
    ("cuda_api", "idle_cuda_api_ns", "#4C72B0", "in other CUDA API calls"),
    ("other", "idle_other_ns", "#55A868", "in other (Python)"),
    ("unattributed", "idle_unattributed_ns", "#BBBBBB", "unattributed (no matched launch)"),
)
IDLE_COLUMNS = tuple(s[1] for s in IDLE_STATES)

CSS = """
.idlebar{display:flex;width:640px;max-width:100%;height:18px;border:1px solid #999;margin:4px 0}
.idlebar span{display:block;height:100%} .legend span{display:inline-block;width:10px;height:10px;
margin:0 3px 0 10px} .idlesent{margin:4px 0 2px 0}
"""


def fmt_ms(ns: int | float) -> str:
    """Milliseconds with 3 decimals: the figure the panel prints for an idle state."""
    return f"{ns / 1e6:.3f}"


def _fmt_s(ns: float, total: float) -> str:
    """Seconds (2 decimals) when the idle total is a second or more, else ms (3 significant digits)."""
    if total >= 1e9 and ns >= 5e6:
        return f"{ns / 1e9:.2f} s"
    return f"{ns / 1e6:.3g} ms"


def sentence(values: dict[str, int]) -> str:
    """``of 1.24 s idle, 0.83 s the launching thread was in other (Python), 0.27 s in OS calls, ...``."""
    total = sum(values.values())
    if total <= 0:
        return "no idle time between GPU activities"
    parts: list[str] = []
    for state, _, _, phrase in sorted(IDLE_STATES, key=lambda s: -values.get(s[0], 0)):
        v = values.get(state, 0)
        if v > 0:
            lead = "the launching thread was " if not parts and state != "unattributed" else ""
            parts.append(f"{_fmt_s(v, total)} {lead}{phrase}")
    return f"of {_fmt_s(total, total)} idle, " + ", ".join(parts)


def bar_html(values: dict[str, int]) -> str:
    """A stacked horizontal bar of the six states (widths in % of the idle time), with hover titles."""
    total = sum(values.values())
    segs = []
    for state, _, colour, _ in IDLE_STATES:
        v = values.get(state, 0)
        if total > 0 and v > 0:
            pct = 100.0 * v / total
            segs.append(
                f'<span style="width:{pct:.3f}%;background:{colour}" '
                f'title="{state}: {fmt_ms(v)} ms ({pct:.1f}%)"></span>'
            )
    return f'<div class="idlebar">{"".join(segs)}</div>'


def legend_html() -> str:
    """The colour key of the six states."""
    return (
        '<p class="legend meta">'
        + "".join(f'<span style="background:{c}"></span>{html.escape(s)}' for s, _, c, _ in IDLE_STATES)
        + "</p>"
    )


def breakdown_table(values: dict[str, int], css_class: str) -> str:
    """One row per state: ms and % of the idle time; ``data-state``/``data-ns`` carry the exact values."""
    total = sum(values.values())
    rows = []
    for state, _col, colour, _ in IDLE_STATES:
        v = int(values.get(state, 0))
        pct = f"{100.0 * v / total:.1f}%" if total else "–"
        rows.append(
            f'<tr data-state="{state}" data-ns="{v}"><td class="l"><span style="color:{colour}">■</span> '
            f"{state}</td><td>{fmt_ms(v)}</td><td>{pct}</td></tr>"
        )
    rows.append(
        f'<tr data-state="total" data-ns="{int(total)}"><td class="l">total idle</td><td>{fmt_ms(total)}</td>'
        f"<td>{'100.0%' if total else '–'}</td></tr>"
    )
    return (
        f'<div class="wide"><table class="{css_class}"><thead><tr><th class="l">state</th><th>ms</th>'
        f"<th>% of idle</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _has_table(store: Store, name: str) -> bool:
    row = store.con.execute(
        bind("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name])
    ).fetchone()
    return bool(row and row[0])


def _block(title: str, values: dict[str, int], css_class: str, anchor: str) -> str:
    return (
        f'<div class="idle" id="{html.escape(anchor)}"><h4>{html.escape(title)}</h4>'
        f'<p class="idlesent">{html.escape(sentence(values))}</p>'
        f"{bar_html(values)}{breakdown_table(values, css_class)}</div>"
    )


def trace_idle_section(store: Store, trace_id: str) -> str:
    """Per device of ``trace_id``: the sentence, the stacked bar and the table; then GIL wait per thread."""
    cols = ", ".join(IDLE_COLUMNS)
    rows = store.con.execute(
        bind(
            f"SELECT device_id, gap_total_ns, {cols} FROM device_metrics WHERE trace_id = ? "
            "ORDER BY device_id",
            [trace_id],
        )
    ).fetchall()
    parts = ["<h3>Why the GPU was idle</h3>"]
    if not rows:
        parts.append('<p class="note">no device_metrics rows for this trace: no idle attribution</p>')
    elif all(r[2] is None for r in rows):
        parts.append(
            '<p class="note">idle attribution not stored for this trace (stored before metric version 3): '
            "run <code>traceforge reanalyze</code></p>"
        )
    else:
        parts.append(
            '<p class="meta">Idle time between GPU activities split by what the thread that launched '
            "the next activity was doing (<code>device_metrics.idle_*_ns</code>).</p>"
        )
        parts.append(legend_html())
        for r in rows:
            if r[2] is None:
                parts.append(f'<p class="note">device {r[0]}: idle attribution not stored</p>')
                continue
            values = {s[0]: int(v) for s, v in zip(IDLE_STATES, r[2:])}
            parts.append(_block(f"device {r[0]}", values, "idle", f"idle-{trace_id}-{r[0]}"))
    parts.append(gil_table(store, trace_id))
    return "\n".join(parts)


GIL_COLUMNS = (
    "pid",
    "tid",
    "name",
    "gil_hold_ns",
    "gil_wait_ns",
    "gil_wait_count",
    "gil_wait_p50_ns",
    "gil_wait_p99_ns",
    "gil_wait_max_ns",
)


def gil_table(store: Store, trace_id: str) -> str:
    """GIL hold/wait per thread (``thread_gil``), most waiting first; a note when the trace has none."""
    from .html import table_html

    if not _has_table(store, "thread_gil"):
        return '<p class="note">no GIL trace in this store (<code>thread_gil</code> absent)</p>'
    rows = store.con.execute(
        bind(
            f"SELECT {', '.join(GIL_COLUMNS)} FROM thread_gil WHERE trace_id = ? "
            "ORDER BY gil_wait_ns DESC, pid, tid",
            [trace_id],
        )
    ).fetchall()
    if not rows:
        return (
            '<p class="note">no GIL ranges in this trace (capture with <code>--python-sampling</code>/'
            "GIL tracing to see GIL wait per thread)</p>"
        )
    dicts = [dict(zip(GIL_COLUMNS, r)) for r in rows]
    for d in dicts:
        d["name"] = "–" if d["name"] is None else str(d["name"])
        d["pid"], d["tid"] = str(d["pid"]), str(d["tid"])
        d["gil_wait_ms"] = d["gil_wait_ns"] / 1e6 if d["gil_wait_ns"] is not None else None
    return "<h4>GIL wait per thread</h4>" + table_html(
        dicts,
        ["pid", "tid", "name", "gil_wait_ms", *GIL_COLUMNS[3:]],
        css_class="gil",
    )


def sweep_idle_section(store: Store, config: Mapping[str, Any], run_ids: Sequence[str], anchor: str) -> str:
    """The panel per N of a sweep (idle states summed over the ok cells' linked traces)."""
    from ..analysis.idle import idle_by_n

    parts = ["<h3>Why the GPU was idle, per N</h3>"]
    rows = idle_by_n(store, config, run_ids)
    if not rows:
        parts.append(
            '<p class="note">no ok cell of this sweep links a stored trace with idle attribution</p>'
        )
        return "\n".join(parts)
    parts.append(
        '<p class="meta">Idle attribution summed over the ok cells\' linked traces (all devices).</p>'
    )
    parts.append(legend_html())
    for n, traces, values in rows:
        parts.append(_block(f"N={n} ({traces} trace(s))", values, "idle-n", f"{anchor}-idle-n{n}"))
    return "\n".join(parts)
