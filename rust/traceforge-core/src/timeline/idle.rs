//! Idle-gap attribution: what the thread that launched the GPU activity ending a gap was doing during it.
//!
//! For a gap `[a, b)` of a device, the next activity is the non-empty activity (kernel or whole-graph
//! execution) starting at `b` whose launching API call was matched; among several, the call that started
//! first (then lower thread, then lower launch key). Its thread T is looked at instant by instant: the
//! first of [`STATE_NAMES`] that holds for T (`sync`: inside a CUDA call whose name contains
//! `Synchronize`; `gil_wait`: inside a `Waiting for GIL` range; `os`: inside an OS runtime call;
//! `cuda_api`: inside any other CUDA call), else `other`. A gap whose next activity has no matched launch
//! is `unattributed`. The six amounts ([`Idle`]) sum to the gap's length.
//!
//! Each state of each thread is held as a merged, disjoint union (built once by [`StateIntervals`]), so
//! a gap costs a binary search per state and a cut at each piece boundary inside it.
use std::collections::HashMap;

use super::gaps::{Gaps, InOrderGaps};
use crate::ids::NULL_I64;
use crate::views::OpsView;

/// The thread states, in priority order (before `other`).
pub const STATE_NAMES: [&str; 4] = ["sync", "gil_wait", "os", "cuda_api"];
/// Index of `sync` in [`STATE_NAMES`].
pub const SYNC: usize = 0;
/// Index of `gil_wait`.
pub const GIL_WAIT: usize = 1;
/// Index of `os`.
pub const OS: usize = 2;
/// Index of `cuda_api`.
pub const CUDA_API: usize = 3;
/// Index of `other` in [`Idle`].
pub const OTHER: usize = 4;
/// Index of `unattributed` in [`Idle`].
pub const UNATTRIBUTED: usize = 5;

/// Idle time of a gap (or a device) in ns: sync, gil_wait, os, cuda_api, other, unattributed.
pub type Idle = [i64; 6];

/// The six column names of an [`Idle`], as stored.
pub const IDLE_COLUMNS: [&str; 6] =
    ["idle_sync_ns", "idle_gil_wait_ns", "idle_os_ns", "idle_cuda_api_ns", "idle_other_ns", "idle_unattributed_ns"];

/// Raw state intervals of each thread, as they are collected (unsorted, possibly overlapping).
#[derive(Debug, Default, Clone)]
pub struct StateIntervals {
    index: HashMap<i64, usize>,
    keys: Vec<i64>,
    intervals: Vec<[Vec<(i64, i64)>; 4]>,
    last: Option<(i64, usize)>,
}

impl StateIntervals {
    /// Record that thread `thread` (a thread key) is in `state` during `[start, end)`; empty intervals and
    /// NULL threads or times are ignored.
    pub fn push(&mut self, thread: i64, state: usize, start: i64, end: i64) {
        if thread == NULL_I64 || start == NULL_I64 || end == NULL_I64 || end <= start {
            return;
        }
        let slot = match self.last {
            Some((t, slot)) if t == thread => slot,
            _ => {
                let next = self.keys.len();
                let slot = *self.index.entry(thread).or_insert(next);
                if slot == next {
                    self.keys.push(thread);
                    self.intervals.push(Default::default());
                }
                self.last = Some((thread, slot));
                slot
            }
        };
        let list = &mut self.intervals[slot][state];
        // Calls nested in the previous one (driver calls in runtime calls) or touching it need no entry.
        if let Some(last) = list.last_mut() {
            if start >= last.0 && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
        }
        list.push((start, end));
    }

    /// The merged unions, per thread.
    pub fn merged(self) -> ThreadStates {
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        order.sort_unstable_by_key(|&i| self.keys[i]);
        let keys: Vec<i64> = order.iter().map(|&i| self.keys[i]).collect();
        let mut intervals = self.intervals;
        let states = order.iter().map(|&i| std::mem::take(&mut intervals[i]).map(Union::of)).collect();
        ThreadStates { keys, states }
    }
}

/// A sorted union of disjoint, non-touching half-open intervals.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Union {
    pub start: Vec<i64>,
    pub end: Vec<i64>,
}

impl Union {
    /// The union of `intervals` (consumed).
    pub fn of(mut intervals: Vec<(i64, i64)>) -> Union {
        // A thread's calls come mostly in time order already: a check is cheaper than a sort.
        if !intervals.windows(2).all(|w| w[0] <= w[1]) {
            intervals.sort_unstable();
        }
        let mut u = Union::default();
        for (s, e) in intervals {
            if e <= s {
                continue;
            }
            match u.end.last_mut() {
                Some(last) if s <= *last => *last = (*last).max(e),
                _ => {
                    u.start.push(s);
                    u.end.push(e);
                }
            }
        }
        u.start.shrink_to_fit();
        u.end.shrink_to_fit();
        u
    }

    /// Append the pieces of the union inside `[a, b)` to `out`. `hint` is where the previous search ended:
    /// gaps come mostly in time order, so the search gallops forward from it (then becomes the new hint).
    fn clip(&self, a: i64, b: i64, hint: &mut usize, out: &mut Vec<(i64, i64)>) {
        let (start, n) = (&self.start, self.start.len());
        // i = the last piece starting at or before a (or 0).
        let mut i = if *hint < n && start[*hint] <= a {
            let (mut lo, mut step) = (*hint, 1usize);
            let hi = loop {
                let hi = lo + step;
                if hi >= n || start[hi] > a {
                    break hi.min(n);
                }
                lo = hi;
                step *= 2;
            };
            lo + start[lo..hi].partition_point(|&s| s <= a) - 1
        } else {
            start.partition_point(|&s| s <= a).saturating_sub(1)
        };
        *hint = i;
        while i < self.start.len() && self.start[i] < b {
            let (s, e) = (self.start[i].max(a), self.end[i].min(b));
            if e > s {
                out.push((s, e));
            }
            i += 1;
        }
    }
}

/// The merged state unions of every thread that has any, by thread key.
#[derive(Debug, Default, Clone)]
pub struct ThreadStates {
    keys: Vec<i64>,
    states: Vec<[Union; 4]>,
}

/// Reused buffers of [`ThreadStates::attribute`].
#[derive(Debug, Default)]
pub struct Scratch {
    pieces: [Vec<(i64, i64)>; 4],
    cuts: Vec<i64>,
    /// Per thread and state, where the last search in its union ended.
    hints: Vec<[usize; 4]>,
}

impl ThreadStates {
    /// Number of threads with states.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no thread has a state.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Index of a thread's states, if it has any.
    pub fn index(&self, thread: i64) -> Option<usize> {
        self.keys.binary_search(&thread).ok()
    }

    /// The idle amounts of the gap `[a, b)` whose next activity was launched by the thread of index
    /// `thread` (None: a thread without states, all `other`).
    pub fn attribute(&self, thread: Option<usize>, a: i64, b: i64, scratch: &mut Scratch) -> Idle {
        let mut out: Idle = [0; 6];
        let Some(t) = thread else {
            out[OTHER] = b - a;
            return out;
        };
        let states = &self.states[t];
        if scratch.hints.len() < self.states.len() {
            scratch.hints.resize(self.states.len(), [0; 4]);
        }
        scratch.cuts.clear();
        scratch.cuts.extend([a, b]);
        for (s, pieces) in scratch.pieces.iter_mut().enumerate() {
            pieces.clear();
            states[s].clip(a, b, &mut scratch.hints[t][s], pieces);
            scratch.cuts.extend(pieces.iter().flat_map(|&(s, e)| [s, e]));
        }
        // One state alone (the common case without GIL or OS tracing): no cut is needed.
        let mut busy = scratch.pieces.iter().enumerate().filter(|(_, p)| !p.is_empty());
        match (busy.next(), busy.next()) {
            (None, _) => {
                out[OTHER] = b - a;
                return out;
            }
            (Some((s, pieces)), None) => {
                out[s] = pieces.iter().map(|&(lo, hi)| hi - lo).sum();
                out[OTHER] = b - a - out[s];
                return out;
            }
            _ => {}
        }
        scratch.cuts.sort_unstable();
        scratch.cuts.dedup();
        let mut next = [0usize; 4];
        for w in scratch.cuts.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            let mut chosen = OTHER;
            for (s, pieces) in scratch.pieces.iter().enumerate() {
                while next[s] < pieces.len() && pieces[next[s]].1 <= lo {
                    next[s] += 1;
                }
                if next[s] < pieces.len() && pieces[next[s]].0 <= lo {
                    chosen = s;
                    break;
                }
            }
            out[chosen] += hi - lo;
        }
        out
    }
}

/// Every gap in the order `gap_rows` emits them: the stored gaps, then those of each in-order device found
/// again from the kernels (`kernels`, the view the gaps were found on).
pub fn for_each_gap(gaps: &Gaps, kernels: &OpsView<'_>, mut f: impl FnMut(i64, i64, i64)) {
    for (i, device) in gaps.devices(0..gaps.len()).enumerate() {
        f(device, gaps.start[i], gaps.end[i]);
    }
    for &device in &gaps.in_order_devices {
        let mut cursor = InOrderGaps::default();
        cursor
            .advance(kernels.start, kernels.end, kernels.device, device, usize::MAX, |s, e| f(i64::from(device), s, e));
    }
}

/// No matched next activity: the gap is unattributed.
pub const NO_LAUNCH: u32 = u32::MAX;
/// A launching thread without any state: the gap is `other`.
pub const NO_STATES: u32 = u32::MAX - 1;

/// The attribution of every gap of a trace.
#[derive(Debug, Default, Clone)]
pub struct IdleAttribution {
    /// Per gap in emission order ([`for_each_gap`]): the index of its launching thread in `states`, or
    /// [`NO_LAUNCH`] / [`NO_STATES`] (4 bytes a gap); empty, like `states`, when every amount is kept.
    pub gap_thread: Vec<u32>,
    /// Per gap in emission order, its amounts, kept when there are at most `keep_amounts_up_to` gaps
    /// (48 bytes a gap); beyond, they are computed again as the gaps are written.
    pub amounts: Vec<Idle>,
    /// (device, totals) in device order.
    pub devices: Vec<(i64, Idle)>,
    pub states: ThreadStates,
}

impl IdleAttribution {
    /// The amounts of gap number `i` (emission order) `[a, b)`.
    pub fn gap(&self, i: usize, a: i64, b: i64, scratch: &mut Scratch) -> Idle {
        if let Some(&kept) = self.amounts.get(i) {
            return kept;
        }
        self.compute(i, a, b, scratch)
    }

    fn compute(&self, i: usize, a: i64, b: i64, scratch: &mut Scratch) -> Idle {
        match self.gap_thread.get(i).copied().unwrap_or(NO_LAUNCH) {
            NO_LAUNCH => {
                let mut out: Idle = [0; 6];
                out[UNATTRIBUTED] = b - a;
                out
            }
            NO_STATES => self.states.attribute(None, a, b, scratch),
            t => self.states.attribute(Some(t as usize), a, b, scratch),
        }
    }

    /// The totals of `device` (zeros when it has no gap).
    pub fn device(&self, device: i64) -> Idle {
        self.devices.iter().find(|d| d.0 == device).map_or([0; 6], |d| d.1)
    }
}

/// Attribute every gap of `gaps` (found over `kernels` and the whole-graph executions `graphs`) with the
/// thread states `states`; each gap's amounts are kept when there are at most `keep_amounts_up_to` gaps.
pub fn attribute(
    gaps: &Gaps,
    kernels: &OpsView<'_>,
    graphs: &OpsView<'_>,
    states: ThreadStates,
    keep_amounts_up_to: usize,
) -> IdleAttribution {
    // Gap ends by (device, end): gaps of a device are disjoint, so at most one gap ends at a given instant.
    let mut ends: Vec<(i64, i64, u32)> = Vec::new();
    for_each_gap(gaps, kernels, |device, _, b| {
        let n = ends.len() as u32;
        ends.push((device, b, n));
    });
    let n = ends.len();
    ends.sort_unstable();
    // The winning launch of each gap: (call start, thread key, launch key), smallest first.
    let mut best: Vec<(i64, i64, i64)> = vec![(i64::MAX, NULL_I64, i64::MAX); n];
    if n > 0 {
        // Activities come mostly in start order per device: search forward from the last hit (galloping)
        // before a full binary search.
        let mut hint = 0usize;
        for ops in [kernels, graphs] {
            for i in 0..ops.len() {
                let (s, e, call) = (ops.start[i], ops.end[i], ops.api_start[i]);
                if e <= s || call == NULL_I64 {
                    continue;
                }
                let thread = ops.thread.get(i);
                if thread == NULL_I64 {
                    continue;
                }
                let device = i64::from(ops.device.get(i));
                if let Some(pos) = gallop_find(&ends, (device, s), &mut hint) {
                    let slot = &mut best[ends[pos].2 as usize];
                    let candidate = (call, thread, ops.launch.get(i));
                    if candidate < *slot {
                        *slot = candidate;
                    }
                }
            }
        }
    }
    drop(ends);
    let gap_thread: Vec<u32> = best
        .iter()
        .map(
            |&(call, thread, _)| {
                if call == i64::MAX {
                    NO_LAUNCH
                } else {
                    states.index(thread).map_or(NO_STATES, |t| t as u32)
                }
            },
        )
        .collect();
    drop(best);
    let mut out = IdleAttribution { gap_thread, amounts: Vec::new(), devices: Vec::new(), states };
    let keep = n <= keep_amounts_up_to;
    let mut amounts: Vec<Idle> = Vec::with_capacity(if keep { n } else { 0 });
    let mut scratch = Scratch::default();
    let mut totals: Vec<(i64, Idle)> = Vec::new();
    let mut i = 0usize;
    for_each_gap(gaps, kernels, |device, a, b| {
        let idle = out.compute(i, a, b, &mut scratch);
        i += 1;
        if keep {
            amounts.push(idle);
        }
        let slot = match totals.iter().position(|t| t.0 == device) {
            Some(p) => p,
            None => {
                totals.push((device, [0; 6]));
                totals.len() - 1
            }
        };
        for (t, v) in totals[slot].1.iter_mut().zip(idle) {
            *t += v;
        }
    });
    totals.sort_unstable_by_key(|t| t.0);
    out.devices = totals;
    if keep {
        // Every amount is kept: the states and launching threads are not needed any more.
        out.amounts = amounts;
        out.states = ThreadStates::default();
        out.gap_thread = Vec::new();
    }
    out
}

/// The position of `key` among the sorted `(device, end, _)` entries, searched forward from `hint` (which
/// becomes the position where the search ended).
fn gallop_find(ends: &[(i64, i64, u32)], key: (i64, i64), hint: &mut usize) -> Option<usize> {
    let n = ends.len();
    let at = |i: usize| (ends[i].0, ends[i].1);
    let lower = if *hint < n && at(*hint) <= key {
        let (mut lo, mut step) = (*hint, 1usize);
        let hi = loop {
            let hi = lo + step;
            if hi >= n || at(hi) > key {
                break hi.min(n);
            }
            lo = hi;
            step *= 2;
        };
        // the first entry >= key lies in [lo, hi]
        lo + ends[lo..hi].partition_point(|x| (x.0, x.1) < key)
    } else {
        ends.partition_point(|x| (x.0, x.1) < key)
    };
    *hint = lower.min(n.saturating_sub(1));
    (lower < n && at(lower) == key).then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::testing::plain_ops;

    fn states(rows: &[(i64, usize, i64, i64)]) -> ThreadStates {
        let mut s = StateIntervals::default();
        for &(t, st, a, b) in rows {
            s.push(t, st, a, b);
        }
        s.merged()
    }

    #[test]
    fn galloping_from_the_hint_finds_what_a_fresh_search_finds() {
        let u = Union::of((0..1000).map(|i| (i * 10, i * 10 + 5)).collect());
        let mut rng = crate::timeline::testing::Lcg(3);
        let mut hint = 0usize;
        for _ in 0..2000 {
            let a = rng.next(10_100) - 50;
            let b = a + rng.next(60);
            let (mut with_hint, mut fresh) = (Vec::new(), Vec::new());
            u.clip(a, b, &mut hint, &mut with_hint);
            u.clip(a, b, &mut 0, &mut fresh);
            let brute: Vec<(i64, i64)> =
                u.start.iter().zip(&u.end).map(|(&s, &e)| (s.max(a), e.min(b))).filter(|&(s, e)| e > s).collect();
            assert_eq!(with_hint, brute, "[{a}, {b})");
            assert_eq!(fresh, brute);
        }
    }

    #[test]
    fn galloping_lookup_of_gap_ends_equals_a_binary_search() {
        let ends: Vec<(i64, i64, u32)> = (0..500).map(|i| (i % 3, (i / 3) * 7, i as u32)).collect();
        let mut ends = ends;
        ends.sort_unstable();
        let mut rng = crate::timeline::testing::Lcg(5);
        let mut hint = 0usize;
        for _ in 0..3000 {
            let key = (rng.next(4), rng.next(1200));
            let expected = ends.binary_search_by(|x| (x.0, x.1).cmp(&key)).ok();
            assert_eq!(gallop_find(&ends, key, &mut hint), expected, "{key:?}");
        }
        assert_eq!(gallop_find(&[], (0, 0), &mut hint), None);
    }

    #[test]
    fn unions_merge_overlapping_and_touching_intervals() {
        let u = Union::of(vec![(5, 7), (0, 2), (2, 3), (6, 9), (10, 10), (11, 12)]);
        assert_eq!((u.start, u.end), (vec![0, 5, 11], vec![3, 9, 12]));
    }

    #[test]
    fn states_overlapping_the_gap_edges_are_clipped_and_ranked() {
        // The edges export's first gap [200, 1000) on thread A: sync [150, 300) over the left edge, a
        // GIL wait [250, 450), poll [400, 600), a launch [900, 990), read [950, 1050) over the right edge.
        let a = 7;
        let s = states(&[
            (a, SYNC, 150, 300),
            (a, GIL_WAIT, 250, 450),
            (a, OS, 400, 600),
            (a, CUDA_API, 900, 990),
            (a, OS, 950, 1050),
            (a, CUDA_API, 50, 60),
        ]);
        let t = s.index(a);
        assert_eq!(s.attribute(t, 200, 1000, &mut Scratch::default()), [100, 150, 200, 50, 300, 0]);
        // A thread without states: all other; one with states outside the gap: all other too.
        assert_eq!(s.attribute(None, 0, 10, &mut Scratch::default()), [0, 0, 0, 0, 10, 0]);
        assert_eq!(s.attribute(t, 2000, 2010, &mut Scratch::default()), [0, 0, 0, 0, 10, 0]);
        assert_eq!(s.index(8), None);
    }

    #[test]
    fn ties_at_the_gap_end_go_to_the_call_that_started_first() {
        // Device 0: K0 [0, 100) then, at 500, K1 (call at 300 by thread 2), K2 (call at 200 by thread 1),
        // K3 empty (call at 100 by thread 3: never active); at 900, K4 with no matched launch.
        let device = [0i32; 5];
        let stream = [0i32; 5];
        let start = [0i64, 500, 500, 500, 900];
        let end = [100i64, 600, 550, 500, 950];
        let thread = [1i64, 2, 1, 3, NULL_I64];
        let api_start = [-10i64, 300, 200, 100, NULL_I64];
        let launch = [10i64, 11, 12, 13, NULL_I64];
        let k = plain_ops(&device, &stream, &start, &end, &thread, &api_start, &launch);
        let g = plain_ops(&[], &[], &[], &[], &[], &[], &[]);
        let mut gaps = Gaps::default();
        gaps.push(0, 100, 500);
        gaps.push(0, 600, 900);
        let s = states(&[(1, GIL_WAIT, 0, 150), (2, SYNC, 0, 1000), (3, SYNC, 0, 1000)]);
        let idle = attribute(&gaps, &k, &g, s, 0);
        let mut scratch = Scratch::default();
        // Thread 1 waits for the GIL on [100, 150), then other.
        assert_eq!(idle.gap(0, 100, 500, &mut scratch), [0, 50, 0, 0, 350, 0]);
        assert_eq!(idle.gap(1, 600, 900, &mut scratch), [0, 0, 0, 0, 0, 300]);
        assert_eq!(idle.device(0), [0, 50, 0, 0, 350, 300]);
        assert_eq!(idle.device(1), [0; 6]);
    }

    #[test]
    fn a_launching_thread_without_states_is_other_and_in_order_gaps_are_found_again() {
        let device = [0i32; 3];
        let stream = [0i32; 3];
        let start = [0i64, 20, 50];
        let end = [10i64, 30, 60];
        let thread = [5i64, 5, 6];
        let api_start = [-1i64, 15, 40];
        let launch = [1i64, 2, 3];
        let k = plain_ops(&device, &stream, &start, &end, &thread, &api_start, &launch);
        let g = plain_ops(&[], &[], &[], &[], &[], &[], &[]);
        let gaps = Gaps { in_order_devices: vec![0], ..Default::default() };
        let idle = attribute(&gaps, &k, &g, states(&[(5, CUDA_API, 15, 25)]), 0);
        assert_eq!(idle.gap_thread, vec![0, NO_STATES]);
        // Kept amounts give the same answers, without the states.
        let kept = attribute(&gaps, &k, &g, states(&[(5, CUDA_API, 15, 25)]), usize::MAX);
        let mut scratch = Scratch::default();
        assert!(kept.states.is_empty() && kept.gap_thread.is_empty());
        assert_eq!(kept.gap(0, 10, 20, &mut scratch), idle.gap(0, 10, 20, &mut scratch));
        assert_eq!(kept.gap(1, 30, 50, &mut scratch), [0, 0, 0, 0, 20, 0]);
        // [10, 20): thread 5 is in a CUDA call on [15, 20); [30, 50): thread 6 has no state.
        assert_eq!(idle.device(0), [0, 0, 0, 5, 25, 0]);
    }
}
