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
use crate::varint;
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

/// Up to this many threads, [`StateIntervals::push`] finds a thread's slot by scanning the keys.
const LINEAR_THREADS: usize = 16;

/// Raw state intervals of each thread, as they are collected (unsorted, possibly overlapping).
#[derive(Debug, Default, Clone)]
pub struct StateIntervals {
    index: HashMap<i64, usize>,
    keys: Vec<i64>,
    intervals: Vec<[PackedIntervals; 4]>,
    last: Option<(i64, usize)>,
}

/// Intervals held packed while the API tables stream: each as the varint of its start's (zigzag) distance
/// from the previous start and the varint of its length. A thread's CUDA calls are microseconds long and
/// microseconds apart, so a call takes about 5 bytes instead of 16 (2.4M calls of the x6 export: ~12 MB,
/// not 39 MB, while DuckDB holds the API rows being inserted). The last interval waits unpacked, so that
/// calls nested in it or touching it extend it rather than take an entry. `iter` gives back what was
/// pushed (`tests::packed_intervals_give_back_what_was_pushed`).
#[derive(Debug, Default, Clone)]
pub struct PackedIntervals {
    bytes: Vec<u8>,
    count: usize,
    previous_start: i64,
    pending: Option<(i64, i64)>,
}

impl PackedIntervals {
    /// Append `[start, end)` (`end > start`), or extend the last interval when `start` lies in it.
    pub fn push(&mut self, start: i64, end: i64) {
        if let Some(last) = self.pending.as_mut() {
            if start >= last.0 && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
        }
        if let Some((s, e)) = self.pending.replace((start, end)) {
            self.pack(s, e);
        }
    }

    fn pack(&mut self, start: i64, end: i64) {
        let delta = start.wrapping_sub(self.previous_start);
        varint::put(&mut self.bytes, varint::zigzag(delta));
        varint::put(&mut self.bytes, end.wrapping_sub(start) as u64);
        self.previous_start = start;
        self.count += 1;
    }

    /// Number of intervals held.
    pub fn len(&self) -> usize {
        self.count + usize::from(self.pending.is_some())
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The intervals, in the order they were kept.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let (mut at, mut previous) = (0usize, 0i64);
        let packed = (0..self.count).map(move |_| {
            let start = previous.wrapping_add(varint::unzigzag(varint::get(&self.bytes, &mut at)));
            let end = start.wrapping_add(varint::get(&self.bytes, &mut at) as i64);
            previous = start;
            (start, end)
        });
        packed.chain(self.pending)
    }

    /// The intervals as a plain list (this is consumed).
    pub fn unpack(self) -> Vec<(i64, i64)> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.iter());
        out
    }
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
                // Threads' calls interleave (an OS call of one between two of another), and a trace has
                // a handful of threads with states: a scan of their keys beats hashing on every switch.
                let found = if self.keys.len() <= LINEAR_THREADS {
                    self.keys.iter().position(|&k| k == thread)
                } else {
                    self.index.get(&thread).copied()
                };
                let slot = found.unwrap_or_else(|| {
                    let next = self.keys.len();
                    self.index.insert(thread, next);
                    self.keys.push(thread);
                    self.intervals.push(Default::default());
                    next
                });
                self.last = Some((thread, slot));
                slot
            }
        };
        // Calls nested in the previous one (driver calls in runtime calls) or touching it need no entry.
        self.intervals[slot][state].push(start, end);
    }

    /// The merged unions, per thread. Each list is merged where it lies (sorted, then overlapping and
    /// touching intervals folded into the first of them), so no second copy of the intervals is made.
    pub fn merged(self) -> ThreadStates {
        use rayon::prelude::*;
        let mut threads: Vec<(i64, [PackedIntervals; 4])> = self.keys.into_iter().zip(self.intervals).collect();
        threads.sort_unstable_by_key(|t| t.0);
        let keys: Vec<i64> = threads.iter().map(|t| t.0).collect();
        // Every (thread, state) list is merged on its own, side by side.
        let lists: Vec<PackedIntervals> = threads.into_iter().flat_map(|t| t.1).collect();
        let mut unions = lists.into_par_iter().map(Union::of_packed).collect::<Vec<_>>().into_iter();
        let states =
            keys.iter().map(|_| std::array::from_fn(|_| unions.next().expect("four lists a thread"))).collect();
        ThreadStates { keys, states }
    }
}

/// A sorted union of disjoint, non-touching half-open intervals, held packed: each piece as the varints of
/// its distance from the previous piece's end and its length (a thread's OS calls and CUDA calls are
/// microseconds long and apart: ~5 bytes a piece instead of 16; the 7M states of a 26 s four-thread capture
/// take ~35 MB, not 112). Every [`MARK_EVERY`]-th piece is marked (its start and where it is packed), so a
/// search jumps by binary search over the marks and decodes at most that many pieces; gaps come mostly in
/// time order, so it mostly decodes forward from where the last search ended ([`UnionCursor`]). `clip`
/// gives what the plain sorted list gives (`tests::packed_unions_clip_as_the_plain_list_does`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Union {
    bytes: Vec<u8>,
    len: usize,
    marks: Vec<Mark>,
}

/// Pieces between two marks of a [`Union`].
const MARK_EVERY: usize = 64;

/// Where a marked piece of a [`Union`] starts and is packed.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Mark {
    start: i64,
    /// Offset of the piece in `bytes`, and the end of the piece before it (what its start is packed from).
    offset: usize,
    previous_end: i64,
}

/// A decoded piece of a [`Union`] and where the next one is packed.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnionCursor {
    /// Index of the piece (`usize::MAX`: not positioned yet).
    piece: usize,
    start: i64,
    end: i64,
    /// Offset of the next piece in `bytes`.
    next: usize,
}

impl UnionCursor {
    const UNSET: UnionCursor = UnionCursor { piece: usize::MAX, start: 0, end: 0, next: 0 };
}

impl Union {
    /// The union of `intervals` (any order; empty ones ignored).
    pub fn of(mut intervals: Vec<(i64, i64)>) -> Union {
        intervals.sort_unstable();
        Union::of_sorted(intervals.into_iter())
    }

    /// The union of intervals given in start order.
    fn of_sorted(intervals: impl Iterator<Item = (i64, i64)>) -> Union {
        let mut union = Union::default();
        let mut pending: Option<(i64, i64)> = None;
        let mut previous_end = 0i64;
        for (s, e) in intervals {
            if e <= s {
                continue;
            }
            match pending.as_mut() {
                Some(p) if s <= p.1 => p.1 = p.1.max(e),
                _ => {
                    if let Some(done) = pending.replace((s, e)) {
                        union.pack(done, &mut previous_end);
                    }
                }
            }
        }
        if let Some(done) = pending {
            union.pack(done, &mut previous_end);
        }
        union.bytes.shrink_to_fit();
        union.marks.shrink_to_fit();
        union
    }

    /// The union of what `intervals` holds: packed straight from it when it was pushed in start order
    /// (a thread's calls, mostly), else through a sorted copy.
    fn of_packed(intervals: PackedIntervals) -> Union {
        let mut last = i64::MIN;
        if intervals.iter().all(|(s, _)| std::mem::replace(&mut last, s) <= s) {
            Union::of_sorted(intervals.iter())
        } else {
            Union::of(intervals.unpack())
        }
    }

    fn pack(&mut self, (start, end): (i64, i64), previous_end: &mut i64) {
        if self.len.is_multiple_of(MARK_EVERY) {
            self.marks.push(Mark { start, offset: self.bytes.len(), previous_end: *previous_end });
        }
        varint::put(&mut self.bytes, start.wrapping_sub(*previous_end) as u64);
        varint::put(&mut self.bytes, end.wrapping_sub(start) as u64);
        *previous_end = end;
        self.len += 1;
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no piece.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in time order.
    pub fn pieces(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let mut at = UnionCursor::UNSET;
        (0..self.len).map(move |i| {
            at = if i == 0 { self.at_mark(0) } else { self.after(at) };
            (at.start, at.end)
        })
    }

    /// The piece of mark `m`.
    fn at_mark(&self, m: usize) -> UnionCursor {
        let mark = self.marks[m];
        self.decode(m * MARK_EVERY, mark.offset, mark.previous_end)
    }

    /// The piece after `c` (which must not be the last).
    fn after(&self, c: UnionCursor) -> UnionCursor {
        self.decode(c.piece + 1, c.next, c.end)
    }

    fn decode(&self, piece: usize, mut at: usize, previous_end: i64) -> UnionCursor {
        let start = previous_end.wrapping_add(varint::get(&self.bytes, &mut at) as i64);
        let end = start.wrapping_add(varint::get(&self.bytes, &mut at) as i64);
        UnionCursor { piece, start, end, next: at }
    }

    /// Append the pieces of the union inside `[a, b)` to `out`. `cursor` is where the previous search
    /// ended (the last piece starting at or before its `a`); it becomes this search's.
    fn clip(&self, a: i64, b: i64, cursor: &mut UnionCursor, out: &mut Vec<(i64, i64)>) {
        if self.len == 0 {
            return;
        }
        // The last piece starting at or before a (or the first): from the cursor when it lies before a
        // and no mark past it does, else from the last mark at or before a.
        let next_mark = cursor.piece.wrapping_add(MARK_EVERY) / MARK_EVERY;
        let forward =
            cursor.piece != usize::MAX && cursor.start <= a && self.marks.get(next_mark).is_none_or(|m| m.start > a);
        let mut c = if forward {
            *cursor
        } else {
            self.at_mark(self.marks.partition_point(|m| m.start <= a).saturating_sub(1))
        };
        while c.piece + 1 < self.len {
            let next = self.after(c);
            if next.start > a {
                break;
            }
            c = next;
        }
        *cursor = c;
        loop {
            if c.start >= b {
                break;
            }
            let (s, e) = (c.start.max(a), c.end.min(b));
            if e > s {
                out.push((s, e));
            }
            if c.piece + 1 >= self.len {
                break;
            }
            c = self.after(c);
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
    hints: Vec<[UnionCursor; 4]>,
    /// Where the last read of kept amounts ended.
    cursor: AmountsCursor,
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
            scratch.hints.resize(self.states.len(), [UnionCursor::UNSET; 4]);
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

/// Idle amounts of every gap, kept compactly in emission order ([`for_each_gap`]).
///
/// A gap's amounts sum to its length and `unattributed` is all of it or nothing, so `other` and
/// `unattributed` follow from the length and the four states. A gap keeps one byte saying which of
/// `sync`, `gil_wait`, `os`, `cuda_api` it has (and whether it is unattributed) and one value per state it
/// has: the usual gap of a trace without GIL or OS tracing (some `cuda_api`, the rest `other`) takes 9
/// bytes instead of the 48 of a spelled-out [`Idle`], so every gap's amounts can be kept and the thread
/// states dropped once the gaps are attributed. Amounts that break those rules are kept spelled out
/// (all six values). `tests::compact_amounts_give_back_what_was_pushed` holds `get` to what was pushed.
#[derive(Debug, Default, Clone)]
pub struct GapAmounts {
    /// Per gap: bit `s` set when state `s` (< 4) is non-zero, [`UNATTRIBUTED_BIT`], [`SPELLED_OUT`].
    masks: Vec<u8>,
    values: Vec<i64>,
    /// The `values` offset of every [`CHECKPOINT`]-th gap, for access out of order.
    checkpoints: Vec<usize>,
}

const UNATTRIBUTED_BIT: u8 = 1 << 4;
const SPELLED_OUT: u8 = 1 << 5;
const CHECKPOINT: usize = 256;

/// Where the last [`GapAmounts::get`] ended, so that reading the gaps in order costs O(1) each.
#[derive(Debug, Default, Clone, Copy)]
pub struct AmountsCursor {
    gap: usize,
    value: usize,
}

impl GapAmounts {
    /// Number of gaps.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    fn value_count(mask: u8) -> usize {
        if mask & SPELLED_OUT != 0 {
            6
        } else {
            (mask & 0x0F).count_ones() as usize
        }
    }

    /// Append the amounts of the next gap, of length `len`.
    pub fn push(&mut self, idle: &Idle, len: i64) {
        if self.masks.len().is_multiple_of(CHECKPOINT) {
            self.checkpoints.push(self.values.len());
        }
        let states: i64 = idle[..4].iter().sum();
        let derivable = idle.iter().sum::<i64>() == len
            && idle.iter().all(|&v| v >= 0)
            && (idle[UNATTRIBUTED] == 0 || (states == 0 && idle[OTHER] == 0));
        if !derivable {
            self.masks.push(SPELLED_OUT);
            self.values.extend_from_slice(idle);
            return;
        }
        let mut mask = if idle[UNATTRIBUTED] != 0 { UNATTRIBUTED_BIT } else { 0 };
        for (s, &v) in idle[..4].iter().enumerate() {
            if v != 0 {
                mask |= 1 << s;
                self.values.push(v);
            }
        }
        self.masks.push(mask);
    }

    /// The amounts of gap `i` (emission order), of length `len`.
    pub fn get(&self, i: usize, len: i64, cursor: &mut AmountsCursor) -> Idle {
        if cursor.gap != i || i == 0 {
            let from = i / CHECKPOINT * CHECKPOINT;
            cursor.value = self.checkpoints.get(i / CHECKPOINT).copied().unwrap_or(0)
                + self.masks[from..i].iter().map(|&m| Self::value_count(m)).sum::<usize>();
        }
        let mask = self.masks[i];
        let n = Self::value_count(mask);
        let values = &self.values[cursor.value..cursor.value + n];
        *cursor = AmountsCursor { gap: i + 1, value: cursor.value + n };
        let mut out: Idle = [0; 6];
        if mask & SPELLED_OUT != 0 {
            out.copy_from_slice(values);
            return out;
        }
        let mut next = values.iter();
        for (s, slot) in out[..4].iter_mut().enumerate() {
            if mask & (1 << s) != 0 {
                *slot = *next.next().expect("one value per state bit");
            }
        }
        let rest = len - out[..4].iter().sum::<i64>();
        if mask & UNATTRIBUTED_BIT != 0 {
            out[UNATTRIBUTED] = rest;
        } else {
            out[OTHER] = rest;
        }
        out
    }
}

/// The attribution of every gap of a trace.
#[derive(Debug, Default, Clone)]
pub struct IdleAttribution {
    /// Per gap in emission order ([`for_each_gap`]), its amounts.
    pub amounts: GapAmounts,
    /// (device, totals) in device order.
    pub devices: Vec<(i64, Idle)>,
}

impl IdleAttribution {
    /// The amounts of gap number `i` (emission order) `[a, b)`; reading gaps in order with one `scratch`
    /// costs O(1) a gap.
    pub fn gap(&self, i: usize, a: i64, b: i64, scratch: &mut Scratch) -> Idle {
        self.amounts.get(i, b - a, &mut scratch.cursor)
    }

    /// The totals of `device` (zeros when it has no gap).
    pub fn device(&self, device: i64) -> Idle {
        self.devices.iter().find(|d| d.0 == device).map_or([0; 6], |d| d.1)
    }
}

/// No matched next activity: the gap is unattributed.
const NO_ACTIVITY: u32 = u32::MAX;

/// Attribute every gap of `gaps` (found over `kernels` and the whole-graph executions `graphs`) with the
/// thread states `states`, which are dropped once every gap's amounts are kept.
pub fn attribute(gaps: &Gaps, kernels: &OpsView<'_>, graphs: &OpsView<'_>, states: ThreadStates) -> IdleAttribution {
    let next = next_activities(gaps, kernels, graphs);
    let nk = kernels.len();
    let thread_of = |j: u32| {
        let j = j as usize;
        if j < nk {
            kernels.thread.get(j)
        } else {
            graphs.thread.get(j - nk)
        }
    };
    let mut out = IdleAttribution::default();
    let mut scratch = Scratch::default();
    let mut totals: Vec<(i64, Idle)> = Vec::new();
    let mut i = 0usize;
    for_each_gap(gaps, kernels, |device, a, b| {
        let idle = match next[i] {
            NO_ACTIVITY => {
                let mut u: Idle = [0; 6];
                u[UNATTRIBUTED] = b - a;
                u
            }
            j => states.attribute(states.index(thread_of(j)), a, b, &mut scratch),
        };
        i += 1;
        out.amounts.push(&idle, b - a);
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
    out
}

/// The next activity of every gap, in emission order: the index (kernels, then graphs after them) of the
/// non-empty activity with a matched launch starting at the gap's end on its device whose launch wins
/// (earliest call start, then lower thread, then lower launch key), or [`NO_ACTIVITY`].
///
/// The gap ends are held as 8 bytes a gap, device by device, where each device's gaps come in time order
/// (how [`Gaps`] stores and finds them), and the winners as 4 bytes a gap; other orders take the plain
/// way ([`next_activities_plain`], 24 bytes a gap; `tests::next_activities_equal_the_plain_way`).
fn next_activities(gaps: &Gaps, kernels: &OpsView<'_>, graphs: &OpsView<'_>) -> Vec<u32> {
    let mut ends: Vec<i64> = Vec::new();
    // (device, first, past the last) of each device's run of gaps in `ends`.
    let mut runs: Vec<(i64, usize, usize)> = Vec::new();
    let mut ordered = true;
    for_each_gap(gaps, kernels, |device, _, b| {
        match runs.last_mut() {
            Some(run) if run.0 == device => {
                ordered &= ends.last().is_none_or(|&last| last < b);
                run.2 += 1;
            }
            _ => runs.push((device, ends.len(), ends.len() + 1)),
        }
        ends.push(b);
    });
    runs.sort_unstable();
    ordered &= runs.windows(2).all(|w| w[0].0 != w[1].0);
    if !ordered {
        drop(ends);
        return next_activities_plain(gaps, kernels, graphs);
    }
    let mut best: Vec<u32> = vec![NO_ACTIVITY; ends.len()];
    let nk = kernels.len();
    let key = |j: usize| {
        let (ops, i) = if j < nk { (kernels, j) } else { (graphs, j - nk) };
        (ops.api_start[i], ops.thread.get(i), ops.launch.get(i))
    };
    let mut hints: Vec<usize> = runs.iter().map(|r| r.1).collect();
    let mut last_run: Option<(i64, usize)> = None;
    for (offset, ops) in [(0, kernels), (nk, graphs)] {
        for i in 0..ops.len() {
            let (s, e, call) = (ops.start[i], ops.end[i], ops.api_start[i]);
            if e <= s || call == NULL_I64 || ops.thread.get(i) == NULL_I64 {
                continue;
            }
            let device = i64::from(ops.device.get(i));
            let r = match last_run {
                Some((d, r)) if d == device => r,
                _ => match runs.binary_search_by(|run| run.0.cmp(&device)) {
                    Ok(r) => {
                        last_run = Some((device, r));
                        r
                    }
                    Err(_) => continue,
                },
            };
            let (_, lo, hi) = runs[r];
            let mut hint = hints[r] - lo;
            if let Some(pos) = gallop_find_sorted(&ends[lo..hi], s, &mut hint) {
                let slot = &mut best[lo + pos];
                let j = offset + i;
                if *slot == NO_ACTIVITY || key(j) < key(*slot as usize) {
                    *slot = j as u32;
                }
            }
            hints[r] = lo + hint;
        }
    }
    best
}

/// [`next_activities`] the plain way: every gap's (device, end) sorted, each activity looked up.
fn next_activities_plain(gaps: &Gaps, kernels: &OpsView<'_>, graphs: &OpsView<'_>) -> Vec<u32> {
    // Gap ends by (device, end): gaps of a device are disjoint, so at most one gap ends at a given instant.
    let mut ends: Vec<(i64, i64, u32)> = Vec::new();
    for_each_gap(gaps, kernels, |device, _, b| {
        let n = ends.len() as u32;
        ends.push((device, b, n));
    });
    let n = ends.len();
    ends.sort_unstable();
    let mut best: Vec<(i64, i64, i64, u32)> = vec![(i64::MAX, NULL_I64, i64::MAX, NO_ACTIVITY); n];
    let nk = kernels.len();
    for (offset, ops) in [(0, kernels), (nk, graphs)] {
        for i in 0..ops.len() {
            let (s, e, call) = (ops.start[i], ops.end[i], ops.api_start[i]);
            let thread = ops.thread.get(i);
            if e <= s || call == NULL_I64 || thread == NULL_I64 {
                continue;
            }
            let device = i64::from(ops.device.get(i));
            if let Ok(pos) = ends.binary_search_by(|x| (x.0, x.1).cmp(&(device, s))) {
                let slot = &mut best[ends[pos].2 as usize];
                let candidate = (call, thread, ops.launch.get(i), (offset + i) as u32);
                if candidate < *slot {
                    *slot = candidate;
                }
            }
        }
    }
    best.into_iter().map(|b| b.3).collect()
}

/// The position of `key` in the ascending `ends`, searched forward from `hint` (galloping: activities
/// come mostly in start order per device), which becomes the position where the search ended.
fn gallop_find_sorted(ends: &[i64], key: i64, hint: &mut usize) -> Option<usize> {
    let n = ends.len();
    let lower = if *hint < n && ends[*hint] <= key {
        let (mut lo, mut step) = (*hint, 1usize);
        let hi = loop {
            let hi = lo + step;
            if hi >= n || ends[hi] > key {
                break hi.min(n);
            }
            lo = hi;
            step *= 2;
        };
        // the first entry >= key lies in [lo, hi]
        lo + ends[lo..hi].partition_point(|&x| x < key)
    } else {
        ends.partition_point(|&x| x < key)
    };
    *hint = lower.min(n.saturating_sub(1));
    (lower < n && ends[lower] == key).then_some(lower)
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

    /// The plain way of [`Union::clip`]: every piece of the sorted list, clipped to `[a, b)`.
    fn clip_plain(pieces: &[(i64, i64)], a: i64, b: i64) -> Vec<(i64, i64)> {
        pieces.iter().map(|&(s, e)| (s.max(a), e.min(b))).filter(|&(s, e)| e > s).collect()
    }

    /// The plain union: sorted, overlapping and touching intervals folded together.
    fn union_plain(mut intervals: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
        intervals.retain(|&(s, e)| e > s);
        intervals.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::new();
        for (s, e) in intervals {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }

    #[test]
    fn packed_unions_clip_as_the_plain_list_does() {
        let mut rng = crate::timeline::testing::Lcg(3);
        for round in 0..20 {
            // Short intervals microseconds apart, some overlapping or touching, pushed in start order or not.
            let n = 1 + rng.next(3000) as usize;
            let mut raw: Vec<(i64, i64)> = Vec::new();
            let mut t = rng.next(1000) - 500;
            for _ in 0..n {
                t += rng.next(40) - 5;
                raw.push((t, t + rng.next(30)));
            }
            if round % 3 == 0 {
                raw.reverse();
            }
            let mut packed = PackedIntervals::default();
            raw.iter().filter(|&&(s, e)| e > s).for_each(|&(s, e)| packed.push(s, e));
            let plain = union_plain(raw.clone());
            for u in [Union::of(raw.clone()), Union::of_packed(packed.clone())] {
                assert_eq!(u.pieces().collect::<Vec<_>>(), plain, "round {round}");
                assert_eq!(u.len(), plain.len());
                // Queries mostly forward in time, with jumps back (another device's gaps) and far ahead.
                let (mut cursor, span) = (UnionCursor::UNSET, t + 600);
                let mut a = -600;
                for q in 0..3000 {
                    a = match q % 50 {
                        0 => rng.next(span + 600) - 600,
                        _ => a + rng.next(40),
                    };
                    let b = a + rng.next(80);
                    let mut got = Vec::new();
                    u.clip(a, b, &mut cursor, &mut got);
                    assert_eq!(got, clip_plain(&plain, a, b), "round {round} query {q} [{a}, {b})");
                }
            }
        }
        assert!(Union::of(vec![(3, 3)]).is_empty());
    }

    #[test]
    fn galloping_lookup_of_gap_ends_equals_a_binary_search() {
        let ends: Vec<i64> = (0..500).map(|i| i * 7 + i % 3).collect();
        let mut rng = crate::timeline::testing::Lcg(5);
        let mut hint = 0usize;
        for _ in 0..3000 {
            let key = rng.next(3600);
            let expected = ends.binary_search(&key).ok();
            assert_eq!(gallop_find_sorted(&ends, key, &mut hint), expected, "{key:?}");
        }
        assert_eq!(gallop_find_sorted(&[], 0, &mut hint), None);
    }

    #[test]
    fn packed_intervals_give_back_what_was_pushed() {
        // Out of order, far apart, huge and tiny, nested and touching (those extend the last one).
        let mut rng = crate::timeline::testing::Lcg(13);
        let mut packed = PackedIntervals::default();
        let mut plain: Vec<(i64, i64)> = Vec::new();
        let mut t = 0i64;
        for n in 0..5000 {
            let start = match n % 7 {
                0 => rng.next(1 << 30) - (1 << 29) + t,
                1 => i64::MAX / 2 - rng.next(1000),
                2 => i64::MIN / 2 + rng.next(1000),
                3 => plain.last().map_or(t, |l| l.1), // touching the last one
                _ => t + rng.next(5000),
            };
            let end = start + 1 + if n % 11 == 0 { rng.next(1 << 31) << 20 } else { rng.next(3000) };
            t = start.max(0) % (1 << 40);
            packed.push(start, end);
            match plain.last_mut() {
                Some(last) if start >= last.0 && start <= last.1 => last.1 = last.1.max(end),
                _ => plain.push((start, end)),
            }
        }
        assert_eq!(packed.len(), plain.len());
        assert_eq!(packed.iter().collect::<Vec<_>>(), plain);
        assert_eq!(packed.unpack(), plain);
        assert!(PackedIntervals::default().is_empty() && PackedIntervals::default().unpack().is_empty());
    }

    #[test]
    fn compact_amounts_give_back_what_was_pushed() {
        // Every mix of zero and non-zero states, unattributed gaps, and amounts that break the rules
        // (kept spelled out), read in order, out of order and across checkpoints.
        let mut rng = crate::timeline::testing::Lcg(11);
        let mut pushed: Vec<(Idle, i64)> = Vec::new();
        let mut kept = GapAmounts::default();
        for n in 0..3000 {
            let mut idle: Idle = [0; 6];
            let len;
            if n % 17 == 0 {
                len = 1 + rng.next(1000);
                idle[UNATTRIBUTED] = len;
            } else {
                for v in idle[..4].iter_mut() {
                    if rng.next(3) == 0 {
                        *v = 1 + rng.next(1 << 40);
                    }
                }
                idle[OTHER] = rng.next(1000);
                len = idle.iter().sum::<i64>() + if n % 101 == 0 { 5 } else { 0 };
            }
            if n % 211 == 0 {
                idle[OTHER] = -3; // not derivable: spelled out
            }
            kept.push(&idle, len);
            pushed.push((idle, len));
        }
        let mut cursor = AmountsCursor::default();
        for (i, &(idle, len)) in pushed.iter().enumerate() {
            assert_eq!(kept.get(i, len, &mut cursor), idle, "gap {i}");
        }
        for _ in 0..2000 {
            let i = rng.next(pushed.len() as i64) as usize;
            assert_eq!(kept.get(i, pushed[i].1, &mut cursor), pushed[i].0, "gap {i}");
        }
        assert_eq!(kept.len(), pushed.len());
    }

    #[test]
    fn next_activities_equal_the_plain_way() {
        // Two in-order devices and a stored one, kernels and graphs interleaved, ties, unmatched launches.
        let mut rng = crate::timeline::testing::Lcg(23);
        let n = 4000usize;
        let mut device = Vec::new();
        let mut start = Vec::new();
        let mut end = Vec::new();
        let mut thread = Vec::new();
        let mut api_start = Vec::new();
        let mut launch = Vec::new();
        let mut clock = [0i64; 3];
        for i in 0..n {
            let d = rng.next(3) as usize;
            clock[d] += rng.next(4) * 10; // repeated starts: ties at a gap end
            let s = clock[d];
            device.push(d as i32);
            start.push(s);
            end.push(s + 5 + rng.next(3));
            clock[d] = s + 5;
            let matched = rng.next(7) != 0;
            thread.push(if matched { 1 + rng.next(3) } else { NULL_I64 });
            api_start.push(if matched { s - 1 - rng.next(4) } else { NULL_I64 });
            launch.push(i as i64);
        }
        let stream = vec![0i32; n];
        let (kn, gn) = (3 * n / 4, n / 4);
        let k = plain_ops(
            &device[..kn],
            &stream[..kn],
            &start[..kn],
            &end[..kn],
            &thread[..kn],
            &api_start[..kn],
            &launch[..kn],
        );
        let g = plain_ops(
            &device[kn..],
            &stream[kn..],
            &start[kn..],
            &end[kn..],
            &thread[kn..],
            &api_start[kn..],
            &launch[kn..],
        );
        let mut gaps = Gaps { in_order_devices: vec![0, 2], ..Default::default() };
        // Device 1's gaps stored, in time order: between consecutive starts of its activities.
        let mut d1: Vec<i64> = (0..n).filter(|&i| device[i] == 1).map(|i| start[i]).collect();
        d1.sort_unstable();
        d1.dedup();
        for w in d1.windows(2) {
            gaps.push(1, w[0] + 1, w[1]);
        }
        assert_eq!(gn, n - kn);
        let fast = next_activities(&gaps, &k, &g);
        let plain = next_activities_plain(&gaps, &k, &g);
        assert!(fast.iter().filter(|&&x| x != NO_ACTIVITY).count() > 100);
        assert_eq!(fast, plain);
        // Gaps out of time order take the plain way and still agree.
        let mut shuffled = Gaps::default();
        for w in d1.windows(2).rev() {
            shuffled.push(1, w[0] + 1, w[1]);
        }
        assert_eq!(next_activities(&shuffled, &k, &g), next_activities_plain(&shuffled, &k, &g));
    }

    #[test]
    fn unions_merge_overlapping_and_touching_intervals() {
        let u = Union::of(vec![(5, 7), (0, 2), (2, 3), (6, 9), (10, 10), (11, 12)]);
        assert_eq!(u.pieces().collect::<Vec<_>>(), vec![(0, 3), (5, 9), (11, 12)]);
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
        let idle = attribute(&gaps, &k, &g, s);
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
        let idle = attribute(&gaps, &k, &g, states(&[(5, CUDA_API, 15, 25)]));
        let mut scratch = Scratch::default();
        assert_eq!(idle.amounts.len(), 2);
        assert_eq!(idle.gap(0, 10, 20, &mut scratch), [0, 0, 0, 5, 5, 0]);
        assert_eq!(idle.gap(1, 30, 50, &mut scratch), [0, 0, 0, 0, 20, 0]);
        // [10, 20): thread 5 is in a CUDA call on [15, 20); [30, 50): thread 6 has no state.
        assert_eq!(idle.device(0), [0, 0, 0, 5, 25, 0]);
    }
}
