//! Launch matching: which CUDA API call launched each GPU operation.
//!
//! A GPU operation and the API call that launched it share a process and a correlation id (ids are
//! unique only within a process, so the match is on the launch key `(pid << 40) | correlationId`).
//! The API tables are far larger than the GPU operations and are never held: each chunk of API rows is
//! matched against the operations, sorted by launch key once, as it streams past.
use rayon::slice::ParallelSliceMut;

use crate::export::events::{ApiChunk, GpuOps};
use crate::ids::{decode_global_id, launch_key, thread_key, NULL_I64};
use crate::views::NO_THREAD;

/// Which API call launched each GPU operation (kernels first, then memops, then graph executions).
pub(crate) struct LaunchState {
    /// Op indices with a launch key, sorted by key, for matching API rows.
    pub(super) order: Vec<u32>,
    /// Index into `launchers` of the (thread, API name) that launched each op, or [`NO_LAUNCHER`]: a
    /// trace has few, so 4 bytes an op instead of 12.
    pub(crate) launcher: Vec<u32>,
    /// Distinct (thread key, API name id or -1) pairs.
    pub(crate) launchers: Vec<(i64, i32)>,
    launcher_ids: ahash::AHashMap<(i64, i32), u32>,
    /// Start of the launching API call of each op ([`NULL_I64`] when none matched).
    pub(crate) api_start: Vec<i64>,
    /// End of the launching API call of each op ([`NULL_I64`] when none matched): with the start, the
    /// API time and queue time of a launch (`nsys stats --report kernexecsum`).
    pub(crate) api_end: Vec<i64>,
    /// Whether every API row was matched (the API tables were read to their end).
    pub(super) done: bool,
}

/// `LaunchState::launcher` of an op no API call launched (the metrics' "no thread" as well).
pub(crate) const NO_LAUNCHER: u32 = NO_THREAD;

#[inline]
fn key_of(ops: &GpuOps, op: u32) -> i64 {
    let nk = ops.kernels.len();
    let op = op as usize;
    if op < nk {
        ops.kernels.launch(op)
    } else if op < nk + ops.memops.len() {
        ops.memops.launch[op - nk]
    } else {
        ops.graphs.launch[op - nk - ops.memops.len()]
    }
}

impl LaunchState {
    /// No op matched yet; the ops with a launch key indexed by it.
    pub(super) fn new(ops: &GpuOps) -> Self {
        let n = ops.len();
        let mut order: Vec<u32> = Vec::with_capacity(n);
        order.extend((0..n as u32).filter(|&op| key_of(ops, op) != NULL_I64));
        // Kernels then memops (then the few graph executions), each in export order, which is nearly launch order: a run-adaptive (stable)
        // sort merges those few runs in about linear time, where an unstable sort would not notice them.
        order.par_sort_by_key(|&op| key_of(ops, op));
        LaunchState {
            order,
            launcher: vec![NO_LAUNCHER; n],
            launchers: Vec::new(),
            launcher_ids: Default::default(),
            api_start: vec![NULL_I64; n],
            api_end: vec![NULL_I64; n],
            done: false,
        }
    }

    /// A state whose ops were matched already: `launcher[op]` indexes `launchers` (for tests of what is
    /// built on the matches).
    #[cfg(test)]
    pub(crate) fn matched(launcher: Vec<u32>, launchers: Vec<(i64, i32)>) -> Self {
        let n = launcher.len();
        LaunchState {
            order: Vec::new(),
            launcher,
            launchers,
            launcher_ids: Default::default(),
            api_start: vec![NULL_I64; n],
            api_end: vec![NULL_I64; n],
            done: true,
        }
    }

    /// The launching thread key and API name id of op `op` (NULL_I64 and -1 when none matched).
    #[inline]
    pub(crate) fn launched_by(&self, op: usize) -> (i64, i32) {
        match self.launcher[op] {
            NO_LAUNCHER => (NULL_I64, -1),
            id => self.launchers[id as usize],
        }
    }

    /// The thread key of each launcher, indexed like `launchers` (for [`crate::views::Threads::Indexed`]).
    pub(super) fn launcher_threads(&self) -> Vec<i64> {
        self.launchers.iter().map(|l| l.0).collect()
    }

    /// First position in `order` whose key is >= `key`, searching forward from `hint` when possible.
    fn lower_bound(&self, ops: &GpuOps, key: i64, hint: usize) -> usize {
        let n = self.order.len();
        let below = |i: usize| key_of(ops, self.order[i]) < key;
        if hint >= n || (hint > 0 && !below(hint - 1)) {
            return self.order.partition_point(|&op| key_of(ops, op) < key);
        }
        // Gallop: find a window [hint + step/2, hint + step) that contains the boundary.
        let mut step = 1usize;
        let mut lo = hint;
        while lo + step < n && below(lo + step) {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step).min(n);
        lo + self.order[lo..hi].partition_point(|&op| key_of(ops, op) < key)
    }

    /// Record the launching call of every GPU op this chunk's rows launched; runtime rows come first,
    /// so a driver row never overrides the runtime call that wraps it.
    pub(super) fn absorb(&mut self, ops: &GpuOps, chunk: &ApiChunk) {
        if self.order.is_empty() {
            return;
        }
        // API rows arrive in rowid order, so consecutive keys are usually close: search forward from the
        // previous hit (galloping) before falling back to a full binary search.
        let mut hint = 0usize;
        for r in 0..chunk.len() {
            let gtid = chunk.global_tid[r];
            let key = launch_key(decode_global_id(gtid).0, chunk.correlation[r]);
            if key == NULL_I64 {
                continue;
            }
            let lo = self.lower_bound(ops, key, hint);
            hint = lo;
            for &op in &self.order[lo..] {
                if key_of(ops, op) != key {
                    break;
                }
                let op = op as usize;
                if self.api_start[op] == NULL_I64 {
                    self.api_start[op] = chunk.start[r];
                    self.api_end[op] = chunk.end[r];
                    let launched_by = (thread_key(gtid), i32::try_from(chunk.name_id[r]).unwrap_or(-1));
                    let next = self.launchers.len() as u32;
                    let id = *self.launcher_ids.entry(launched_by).or_insert(next);
                    if id == next {
                        self.launchers.push(launched_by);
                    }
                    self.launcher[op] = id;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::events::{KernelShape, Kernels, Memops};

    const PID_A: i64 = 100;
    const PID_B: i64 = 200;
    /// globalTid of thread 101 of pid 100 and thread 201 of pid 200.
    const TID_A: i64 = (PID_A << 24) | 101;
    const TID_B: i64 = (PID_B << 24) | 201;

    /// Kernels of the given (pid, correlation id), one shape per pid; then memops likewise.
    fn ops(kernels: &[(i64, i64)], memops: &[(i64, i64)]) -> GpuOps {
        let mut k = Kernels::default();
        for (i, &(pid, corr)) in kernels.iter().enumerate() {
            let mut shape: KernelShape = [0; 16];
            shape[3] = pid; // the pid slot of a shape
            let id = k.shapes.iter().position(|s| *s == shape).unwrap_or_else(|| {
                k.shapes.push(shape);
                k.shapes.len() - 1
            });
            k.shape.push(id as u32);
            k.start.push(i as i64);
            k.end.push(i as i64 + 1);
            k.correlation.push(u32::try_from(corr).unwrap());
        }
        k.index_shapes();
        let mut m = Memops::default();
        for &(pid, corr) in memops {
            m.launch.push(launch_key(pid, corr));
            m.start.push(0);
            m.end.push(1);
            m.correlation.push(corr);
            m.global_pid.push(pid << 24);
        }
        GpuOps { kernels: k, memops: m, graphs: Default::default() }
    }

    /// `ops` plus graph executions of the given (pid, correlation id).
    fn with_graphs(mut ops: GpuOps, graphs: &[(i64, i64)]) -> GpuOps {
        for (i, &(pid, corr)) in graphs.iter().enumerate() {
            let g = &mut ops.graphs;
            g.start.push(1_000 + i as i64);
            g.end.push(1_100 + i as i64);
            g.device.push(0);
            g.stream.push(13);
            g.correlation.push(corr);
            g.global_pid.push(pid << 24);
            g.graph_id.push(1);
            g.graph_exec_id.push(2);
            g.launch.push(launch_key(pid, corr));
        }
        ops
    }

    /// API rows (globalTid, correlation id, start, name id) of one table (0 = runtime, 1 = driver).
    fn chunk(api: u8, rows: &[(i64, i64, i64, i64)]) -> ApiChunk {
        ApiChunk {
            api,
            global_tid: rows.iter().map(|r| r.0).collect(),
            correlation: rows.iter().map(|r| r.1).collect(),
            start: rows.iter().map(|r| r.2).collect(),
            end: rows.iter().map(|r| r.2 + 1).collect(),
            name_id: rows.iter().map(|r| r.3).collect(),
            return_value: vec![0; rows.len()],
        }
    }

    #[test]
    fn calls_match_kernels_on_process_and_correlation_id() {
        // Both processes use correlation ids 1 and 2; B's call 2 launched two kernels (a graph); A's kernel
        // with correlation id 99 has no call; A's call 2 launched the memcpy.
        let ops = ops(&[(PID_A, 1), (PID_B, 1), (PID_B, 2), (PID_B, 2), (PID_A, 99)], &[(PID_A, 2)]);
        let mut st = LaunchState::new(&ops);
        // Rows in rowid order, not key order: B's keys come before A's.
        st.absorb(&ops, &chunk(0, &[(TID_B, 1, 50, 7), (TID_A, 1, 10, 7), (TID_A, 2, 20, 8), (TID_B, 2, 60, 7)]));
        assert_eq!(st.api_start, vec![10, 50, 60, 60, NULL_I64, 20]);
        assert_eq!(st.api_end, vec![11, 51, 61, 61, NULL_I64, 21]);
        assert_eq!(st.launched_by(0), (thread_key(TID_A), 7));
        assert_eq!(st.launched_by(1), (thread_key(TID_B), 7));
        assert_eq!(st.launched_by(5), (thread_key(TID_A), 8));
        // The unmatched kernel has no launcher, and no thread for the metrics.
        assert_eq!(st.launched_by(4), (NULL_I64, -1));
        assert_eq!(st.launcher[4], NO_LAUNCHER);
        // Launchers are the distinct (thread, API name) pairs, in first-seen order.
        assert_eq!(st.launchers, vec![(thread_key(TID_B), 7), (thread_key(TID_A), 7), (thread_key(TID_A), 8)]);
        assert_eq!(st.launcher_threads(), vec![thread_key(TID_B), thread_key(TID_A), thread_key(TID_A)]);
    }

    #[test]
    fn the_runtime_call_wins_over_the_driver_call_it_wraps() {
        let ops = ops(&[(PID_A, 1), (PID_A, 2)], &[]);
        let mut st = LaunchState::new(&ops);
        st.absorb(&ops, &chunk(0, &[(TID_A, 1, 10, 7)]));
        // The driver table streams after the runtime table; its row for call 1 changes nothing.
        st.absorb(&ops, &chunk(1, &[(TID_A, 1, 11, 9), (TID_A, 2, 30, 9)]));
        assert_eq!(st.api_start, vec![10, 30]);
        assert_eq!(st.api_end, vec![11, 31]);
        assert_eq!((st.launched_by(0), st.launched_by(1)), ((thread_key(TID_A), 7), (thread_key(TID_A), 9)));
    }

    #[test]
    fn rows_without_a_thread_or_correlation_id_match_nothing() {
        let ops = ops(&[(PID_A, 1)], &[]);
        let mut st = LaunchState::new(&ops);
        st.absorb(&ops, &chunk(0, &[(NULL_I64, 1, 10, 7), (TID_A, NULL_I64, 11, 7)]));
        assert_eq!(st.api_start, vec![NULL_I64]);
        assert!(st.launchers.is_empty());
    }

    #[test]
    fn galloping_finds_every_key_of_a_long_chunk() {
        // Many kernels of one process, called in order, then again out of order: both must match all.
        let n = 1_000i64;
        let kernels: Vec<(i64, i64)> = (0..n).map(|c| (PID_A, c)).collect();
        let ops = ops(&kernels, &[]);
        let rows: Vec<(i64, i64, i64, i64)> = (0..n).map(|c| (TID_A, c, 1_000 + c, 7)).collect();
        let mut st = LaunchState::new(&ops);
        st.absorb(&ops, &chunk(0, &rows));
        assert!((0..n as usize).all(|i| st.api_start[i] == 1_000 + i as i64));
        let mut shuffled = rows.clone();
        shuffled.reverse();
        shuffled.swap(3, 700);
        let mut st = LaunchState::new(&ops);
        st.absorb(&ops, &chunk(0, &shuffled));
        assert!((0..n as usize).all(|i| st.api_start[i] == 1_000 + i as i64));
    }

    #[test]
    fn graph_executions_match_their_graph_launch_after_kernels_and_memops() {
        // A's kernel (corr 1), A's memcpy (corr 2); graph executions of A (corr 3), of B with A's corr 1 (the
        // process tells them apart), and one whose call was not traced (corr 77).
        let ops = with_graphs(ops(&[(PID_A, 1)], &[(PID_A, 2)]), &[(PID_A, 3), (PID_B, 1), (PID_A, 77)]);
        assert_eq!(ops.len(), 5);
        let mut st = LaunchState::new(&ops);
        st.absorb(&ops, &chunk(0, &[(TID_A, 1, 10, 7), (TID_A, 2, 20, 8), (TID_A, 3, 30, 9), (TID_B, 1, 40, 9)]));
        // Op indices: kernel 0, memop 1, graph executions 2, 3, 4.
        assert_eq!(st.api_start, vec![10, 20, 30, 40, NULL_I64]);
        assert_eq!(st.launched_by(2), (thread_key(TID_A), 9));
        assert_eq!(st.launched_by(3), (thread_key(TID_B), 9));
        assert_eq!(st.launcher[4], NO_LAUNCHER);
    }
}
