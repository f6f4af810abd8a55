"""GPU activity over time bins: busy time (the union of activities) and active time (Σ durations) per bin.

These are the aggregates that make a timeline of a million kernels drawable: the report's utilization view,
the plot command's binned timeline and the exported ``utilization`` counter all come from here. Both sums
are exact integer nanoseconds, computed in O((n + bins) log n) with numpy from the activities sorted by start:

- busy time in ``[e_i, e_i+1)``: ``B(e_i+1) - B(e_i)``, with ``B(t)`` the busy time before ``t``, read off the
  disjoint busy periods (starts where an activity begins after every earlier one ended) and their prefix sums;
- active time (kernel-seconds, so mean concurrency = active / width):
  ``F(t) = Σ_{s<=t} (t - s) - Σ_{e<=t} (t - e)``,
  from sorted starts and ends and their prefix sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..store.sql_params import bind

if TYPE_CHECKING:
    from ..store import Store


def capture_origin(store: Store, trace_id: str) -> tuple[int, int]:
    """The capture's start and end (ns): ``traces.trace_start_ns``/``trace_end_ns``, widened to the events.

    Some exports record GPU work before ``ANALYSIS_DETAILS.startTime``; the start is then the first event, so
    that ``--window 0:...`` always begins at the first thing recorded.
    """
    row = store.con.execute(
        bind(
            "SELECT t.trace_start_ns, t.trace_end_ns, "
            "(SELECT min(start_ns) FROM kernels WHERE trace_id = ?), "
            "(SELECT max(end_ns) FROM kernels WHERE trace_id = ?), "
            "(SELECT min(start_ns) FROM memops WHERE trace_id = ?), "
            "(SELECT max(end_ns) FROM memops WHERE trace_id = ?) "
            "FROM traces t WHERE t.trace_id = ?",
            [trace_id] * 5,
        )
    ).fetchone()
    if row is None:
        raise QueryError(f"no trace {trace_id} in the store")
    starts = [int(v) for v in (row[0], row[2], row[4]) if v is not None]
    ends = [int(v) for v in (row[1], row[3], row[5]) if v is not None]
    start = min(starts) if starts else 0
    end = max(ends) if ends else start
    return start, max(end, start + 1)


@dataclass(frozen=True)
class Activities:
    """A device's GPU activities (kernels, and whole CUDA graph executions in graph-mode captures).

    Attributes:
        starts: start times (ns), sorted.
        ends: end times (ns), in the same order.
    """

    starts: Any
    ends: Any


def activities(store: Store, trace_id: str, device_id: int, start_ns: int, end_ns: int) -> Activities:
    """The activities of a device that overlap ``[start_ns, end_ns)``, sorted by start (not clipped).

    They are the intervals of ``device_metrics.busy_ns``: kernels plus the graph-mode rows of
    ``graph_launches`` (those without ``kernel_count``; node-mode rows group kernels already counted).
    """
    import numpy as np

    arrays = store.con.execute(
        bind(
            "SELECT start_ns, end_ns FROM ("
            "SELECT start_ns, end_ns FROM kernels WHERE trace_id = ? AND device_id = ? "
            "UNION ALL SELECT start_ns, end_ns FROM graph_launches WHERE trace_id = ? AND device_id = ? "
            "AND kernel_count IS NULL) WHERE end_ns > ? AND start_ns < ? ORDER BY start_ns",
            [trace_id, device_id, trace_id, device_id, start_ns, end_ns],
        )
    ).fetchnumpy()
    return Activities(
        np.asarray(arrays["start_ns"], dtype=np.int64), np.asarray(arrays["end_ns"], dtype=np.int64)
    )


def bin_edges(start_ns: int, end_ns: int, bins: int) -> Any:
    """``bins + 1`` integer edges from ``start_ns`` to ``end_ns`` (the last bin absorbs the remainder)."""
    import numpy as np

    bins = max(1, int(bins))
    width = max(1, (end_ns - start_ns) // bins)
    edges = start_ns + width * np.arange(bins + 1, dtype=np.int64)
    edges[-1] = max(end_ns, int(edges[-2]) + 1)
    return edges


def busy_per_bin(acts: Activities, edges: Any) -> Any:
    """Busy time (ns of the union of the activities) in each bin ``[edges[i], edges[i + 1])``."""
    import numpy as np

    s, e = acts.starts, acts.ends
    edges = np.asarray(edges, dtype=np.int64)
    if s.size == 0:
        return np.zeros(edges.size - 1, dtype=np.int64)
    reach = np.maximum.accumulate(e)  # end of the busy period so far
    new = np.ones(s.size, dtype=bool)
    new[1:] = s[1:] >= reach[:-1]  # half-open: starting at the previous end starts a new period
    first = np.flatnonzero(new)
    p_start = s[first]
    p_end = reach[np.r_[first[1:] - 1, s.size - 1]]
    lengths = p_end - p_start
    before = np.r_[0, np.cumsum(lengths)[:-1]]  # busy time before each period

    def busy_before(t: Any) -> Any:
        k = np.searchsorted(p_start, t, side="right") - 1
        inside = np.clip(t - p_start[np.maximum(k, 0)], 0, lengths[np.maximum(k, 0)])
        return np.where(k >= 0, before[np.maximum(k, 0)] + inside, 0)

    return np.diff(busy_before(edges))


def active_per_bin(acts: Activities, edges: Any) -> Any:
    """Σ over activities of the time each spends in each bin (ns); ``/ width`` is the mean concurrency."""
    import numpy as np

    edges = np.asarray(edges, dtype=np.int64)
    s = acts.starts
    e = np.sort(acts.ends)
    cs = np.r_[0, np.cumsum(s)]
    ce = np.r_[0, np.cumsum(e)]

    def f(t: Any) -> Any:
        ns = np.searchsorted(s, t, side="right")
        ne = np.searchsorted(e, t, side="right")
        return (ns * t - cs[ns]) - (ne * t - ce[ne])

    return np.diff(f(edges))


def concurrency_steps(starts: Any, ends: Any) -> tuple[Any, Any]:
    """Step function of the number of active intervals: (times, level after each time).

    Half-open intervals: an end at t and a start at t do not overlap (ends are applied first).
    """
    import numpy as np

    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    times = np.concatenate([e, s])
    delta = np.concatenate([-np.ones(e.size, dtype=np.int64), np.ones(s.size, dtype=np.int64)])
    order = np.lexsort((delta, times))  # at equal times, -1 (ends) sort before +1 (starts)
    times, delta = times[order], delta[order]
    level = np.cumsum(delta)
    # keep the last level at each distinct time
    last = np.r_[times[1:] != times[:-1], True]
    return times[last], level[last]
