//! NVTX projection: the GPU work launched from inside each NVTX range.
//!
//! A GPU operation belongs to a range when the API call that launched it started on the range's thread
//! inside `[range start, range end)`. Launches (API calls that launched GPU work) are grouped per thread
//! and sorted by start, so each range is two binary searches plus O(log n) queries on prefix sums and
//! min/max segment trees, whatever the nesting depth.
use crate::ids::NULL_I64;
#[cfg(test)]
use crate::views::Threads;
use crate::views::{KernelsView, MemopsView, OpsView, RangesView};
use rayon::slice::ParallelSliceMut;

/// Projection of one range (index into the [`RangesView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionRow {
    pub range: usize,
    pub gpu_start_ns: Option<i64>,
    pub gpu_end_ns: Option<i64>,
    pub gpu_op_count: i64,
    pub launch_count: i64,
    pub kernel_count: i64,
    pub kernel_time_ns: i64,
    /// Σ(end − start) of the whole-graph executions launched inside the range.
    pub graph_ns: i64,
}

/// A matched GPU operation: its index among kernels, then memops, then graph executions (4 bytes, so that a large trace does not
/// need a 32-byte record per operation).
type OpRef = u32;

/// Columns of one operation looked up through an [`OpRef`].
struct OpTable<'a> {
    kernels: &'a KernelsView<'a>,
    memops: &'a MemopsView<'a>,
    graphs: &'a OpsView<'a>,
}

impl OpTable<'_> {
    #[inline]
    fn view(&self, op: OpRef) -> (&OpsView<'_>, usize, bool) {
        let nk = self.kernels.ops.len();
        let i = op as usize;
        if i < nk {
            (&self.kernels.ops, i, true)
        } else if i < nk + self.memops.ops.len() {
            (&self.memops.ops, i - nk, false)
        } else {
            (self.graphs, i - nk - self.memops.ops.len(), false)
        }
    }
    #[inline]
    fn len(&self) -> usize {
        self.kernels.ops.len() + self.memops.ops.len() + self.graphs.len()
    }
    /// (thread, api_start) of an operation's launching call. With the launch key this orders and tells
    /// apart launches; the launch key costs the most to look up and only separates launches made by one
    /// thread at one instant, so it is looked up apart ([`OpTable::launch`]) and only when needed.
    #[inline]
    fn call(&self, op: OpRef) -> (i64, i64) {
        let (v, i, _) = self.view(op);
        (v.thread.get(i), v.api_start[i])
    }
    #[inline]
    fn launch(&self, op: OpRef) -> i64 {
        let (v, i, _) = self.view(op);
        v.launch.get(i)
    }
    #[inline]
    fn interval(&self, op: OpRef) -> (i64, i64) {
        let (v, i, _) = self.view(op);
        (v.start[i], v.end[i])
    }
    #[inline]
    fn is_kernel(&self, op: OpRef) -> bool {
        (op as usize) < self.kernels.ops.len()
    }
    #[inline]
    fn is_graph(&self, op: OpRef) -> bool {
        (op as usize) >= self.kernels.ops.len() + self.memops.ops.len()
    }
}

struct MinMaxTree {
    n: usize,
    min: Vec<i64>,
    max: Vec<i64>,
}

impl MinMaxTree {
    fn new(mins: impl Iterator<Item = i64>, maxs: impl Iterator<Item = i64>, n: usize) -> Self {
        let mut min = vec![i64::MAX; 2 * n];
        let mut max = vec![i64::MIN; 2 * n];
        for (slot, v) in min[n..].iter_mut().zip(mins) {
            *slot = v;
        }
        for (slot, v) in max[n..].iter_mut().zip(maxs) {
            *slot = v;
        }
        for i in (1..n).rev() {
            min[i] = min[2 * i].min(min[2 * i + 1]);
            max[i] = max[2 * i].max(max[2 * i + 1]);
        }
        MinMaxTree { n, min, max }
    }

    /// (min, max) over `[l, r)`.
    fn query(&self, l: usize, r: usize) -> (i64, i64) {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let (mut l, mut r) = (l + self.n, r + self.n);
        while l < r {
            if l & 1 == 1 {
                lo = lo.min(self.min[l]);
                hi = hi.max(self.max[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                lo = lo.min(self.min[r]);
                hi = hi.max(self.max[r]);
            }
            l >>= 1;
            r >>= 1;
        }
        (lo, hi)
    }
}

/// Matched GPU operations on threads that have ranges, sorted by (thread, launch start, launch):
/// the operations of one launch are contiguous, and a thread's launches form one block.
fn collect_ops(t: &OpTable<'_>, ranges: &RangesView<'_>) -> Vec<OpRef> {
    let mut threads: Vec<i64> = ranges.thread.to_vec();
    threads.sort_unstable();
    threads.dedup();
    let n = t.len();
    let mut ops: Vec<OpRef> = (0..n as u32)
        .filter(|&op| {
            let thread = t.call(op).0;
            thread != NULL_I64 && threads.binary_search(&thread).is_ok() && t.launch(op) != NULL_I64
        })
        .collect();
    // Kernels then memops, each nearly in launch order: a run-adaptive (stable) sort merges the runs. Sorted by
    // (thread, api_start, launch), the launch key looked up only to break ties.
    ops.par_sort_by(|&a, &b| t.call(a).cmp(&t.call(b)).then_with(|| t.launch(a).cmp(&t.launch(b))));
    ops
}

/// Whether `ops[j]` starts a launch (its key differs from that of `ops[j - 1]`), as a bit set: one key
/// comparison per operation instead of one per operation and enclosing range.
fn launch_starts(t: &OpTable<'_>, ops: &[OpRef]) -> Vec<u64> {
    let mut starts = vec![0u64; ops.len().div_ceil(64)];
    for (j, pair) in ops.windows(2).enumerate() {
        let (a, b) = (pair[0], pair[1]);
        if t.call(a) != t.call(b) || t.launch(a) != t.launch(b) {
            starts[(j + 1) / 64] |= 1 << ((j + 1) % 64);
        }
    }
    if !ops.is_empty() {
        starts[0] |= 1;
    }
    starts
}

/// Project every range of `ranges` onto the GPU work its thread launched inside it: kernels, memops and
/// whole-graph executions (`graphs`, one GPU operation each).
///
/// Each range is two binary searches; its aggregates come from a direct pass over its operations when
/// the ranges together cover few operations (the usual nesting of a few levels), or from prefix sums and
/// a min/max tree when they cover many times the trace (many overlapping ranges), so the cost stays
/// O((operations + ranges) log operations) either way.
pub fn project(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    graphs: &OpsView<'_>,
    ranges: &RangesView<'_>,
) -> Vec<ProjectionRow> {
    project_with(kernels, memops, graphs, ranges, 8)
}

/// [`project`] with the direct pass allowed while ranges cover at most `scan_factor` times the operations.
fn project_with(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    graphs: &OpsView<'_>,
    ranges: &RangesView<'_>,
    scan_factor: usize,
) -> Vec<ProjectionRow> {
    let n_ranges = ranges.start.len();
    if n_ranges == 0 {
        return Vec::new();
    }
    let t = OpTable { kernels, memops, graphs };
    let ops = collect_ops(&t, ranges);
    let interval = |op: &OpRef| t.interval(*op);
    let spans: Vec<(usize, usize)> = (0..n_ranges)
        .map(|r| {
            let (thread, start, end) = (ranges.thread[r], ranges.start[r], ranges.end[r]);
            if thread == NULL_I64 || end == NULL_I64 {
                return (0, 0);
            }
            let lo = ops.partition_point(|&o| t.call(o) < (thread, start));
            let hi = ops.partition_point(|&o| t.call(o) < (thread, end));
            (lo, hi.max(lo))
        })
        .collect();
    let covered: usize = spans.iter().map(|s| s.1 - s.0).sum();
    let empty = |r: usize| ProjectionRow {
        range: r,
        gpu_start_ns: None,
        gpu_end_ns: None,
        gpu_op_count: 0,
        launch_count: 0,
        kernel_count: 0,
        kernel_time_ns: 0,
        graph_ns: 0,
    };
    let starts = launch_starts(&t, &ops);
    let new_launch = |j: usize, lo: usize| j == lo || (starts[j / 64] >> (j % 64)) & 1 == 1;

    if covered <= scan_factor.saturating_mul(ops.len()).saturating_add(if scan_factor > 0 { 1 << 20 } else { 0 }) {
        return spans
            .iter()
            .enumerate()
            .map(|(r, &(lo, hi))| {
                let mut row = empty(r);
                if hi > lo {
                    let (mut gs, mut ge) = (i64::MAX, i64::MIN);
                    for (j, op) in ops.iter().enumerate().take(hi).skip(lo) {
                        let (s, e) = interval(op);
                        gs = gs.min(s);
                        ge = ge.max(e);
                        if new_launch(j, lo) {
                            row.launch_count += 1;
                        }
                        if t.is_kernel(*op) {
                            row.kernel_count += 1;
                            row.kernel_time_ns += e - s;
                        } else if t.is_graph(*op) {
                            row.graph_ns += e - s;
                        }
                    }
                    row.gpu_start_ns = Some(gs);
                    row.gpu_end_ns = Some(ge);
                    row.gpu_op_count = (hi - lo) as i64;
                }
                row
            })
            .collect();
    }

    // Many overlapping ranges: prefix sums over the sorted operations and a min/max tree.
    let n = ops.len();
    let mut launches = vec![0i64; n + 1];
    let mut kernel_count = vec![0i64; n + 1];
    let mut kernel_time = vec![0i64; n + 1];
    let mut graph_time = vec![0i64; n + 1];
    for j in 0..n {
        let (s, e) = interval(&ops[j]);
        launches[j + 1] = launches[j] + i64::from(new_launch(j, 0));
        let is_kernel = t.is_kernel(ops[j]);
        kernel_count[j + 1] = kernel_count[j] + i64::from(is_kernel);
        kernel_time[j + 1] = kernel_time[j] + if is_kernel { e - s } else { 0 };
        graph_time[j + 1] = graph_time[j] + if t.is_graph(ops[j]) { e - s } else { 0 };
    }
    let tree = MinMaxTree::new(ops.iter().map(|o| interval(o).0), ops.iter().map(|o| interval(o).1), n);
    spans
        .iter()
        .enumerate()
        .map(|(r, &(lo, hi))| {
            let mut row = empty(r);
            if hi > lo {
                let (gs, ge) = tree.query(lo, hi);
                row.gpu_start_ns = Some(gs);
                row.gpu_end_ns = Some(ge);
                row.gpu_op_count = (hi - lo) as i64;
                // ops[lo] always starts a launch: ops[lo - 1] has an earlier API start or another thread.
                row.launch_count = launches[hi] - launches[lo];
                row.kernel_count = kernel_count[hi] - kernel_count[lo];
                row.kernel_time_ns = kernel_time[hi] - kernel_time[lo];
                row.graph_ns = graph_time[hi] - graph_time[lo];
            }
            row
        })
        .collect()
}

/// For each range of `ranges`: the devices (sorted, distinct) of the GPU operations it projects onto (the
/// operations [`project`] counts), restricted to `wanted` (sorted): one prefix count per wanted device over
/// the sorted operations, so a range costs two binary searches and one difference per wanted device.
pub fn range_devices(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    graphs: &OpsView<'_>,
    ranges: &RangesView<'_>,
    wanted: &[i64],
) -> Vec<Vec<i64>> {
    let n_ranges = ranges.start.len();
    if n_ranges == 0 || wanted.is_empty() {
        return vec![Vec::new(); n_ranges];
    }
    let t = OpTable { kernels, memops, graphs };
    let ops = collect_ops(&t, ranges);
    let device = |op: OpRef| {
        let (v, i, _) = t.view(op);
        i64::from(v.device.get(i))
    };
    let counts: Vec<Vec<u32>> = wanted
        .iter()
        .map(|&d| {
            let mut c = Vec::with_capacity(ops.len() + 1);
            c.push(0u32);
            let mut acc = 0u32;
            for &op in &ops {
                acc += u32::from(device(op) == d);
                c.push(acc);
            }
            c
        })
        .collect();
    (0..n_ranges)
        .map(|r| {
            let (thread, start, end) = (ranges.thread[r], ranges.start[r], ranges.end[r]);
            if thread == NULL_I64 || end == NULL_I64 {
                return Vec::new();
            }
            let lo = ops.partition_point(|&o| t.call(o) < (thread, start));
            let hi = ops.partition_point(|&o| t.call(o) < (thread, end)).max(lo);
            wanted.iter().zip(&counts).filter(|(_, c)| c[hi] > c[lo]).map(|(&d, _)| d).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{Column, LaunchKeys};

    /// Kernels on device 0, stream 0, from (start, end, thread, api_start, launch) columns.
    fn kernels_view<'a>(dev: &'a [i32], names: &'a [u32], c: [&'a [i64]; 5]) -> KernelsView<'a> {
        KernelsView {
            ops: OpsView {
                device: dev.into(),
                stream: dev.into(),
                start: c[0],
                end: c[1],
                thread: Threads::Keys(c[2]),
                api_start: c[3],
                launch: c[4].into(),
            },
            name: names.into(),
            api_end: &[],
        }
    }

    const NO_MEMOPS: MemopsView<'static> = MemopsView {
        ops: OpsView {
            device: Column::Plain(&[]),
            stream: Column::Plain(&[]),
            start: &[],
            end: &[],
            thread: Threads::Keys(&[]),
            api_start: &[],
            launch: LaunchKeys::Plain(&[]),
        },
        op: &[],
        copy_kind: &[],
        bytes: &[],
    };

    #[test]
    fn nested_ranges_and_graph_launches() {
        // Thread 7: launch A (api 10) -> 3 graph kernels; launch B (api 30) -> 1 kernel; thread 8: launch C (api 15).
        let start = [100, 120, 140, 300, 150];
        let end = [110, 130, 160, 320, 170];
        let thread = [7, 7, 7, 7, 8];
        let api = [10, 10, 10, 30, 15];
        let launch = [1, 1, 1, 2, 3];
        let dev = [0i32; 5];
        let names = [0u32; 5];
        let k = kernels_view(&dev, &names, [&start, &end, &thread, &api, &launch]);
        let m = NO_MEMOPS;
        let rt = [7, 7, 8, 7];
        let rs = [0, 5, 0, 30];
        let re = [50, 20, 50, 31];
        let r = RangesView { thread: &rt, start: &rs, end: &re };
        let p = project(&k, &m, &NO_MEMOPS.ops, &r);
        assert_eq!(
            (p[0].launch_count, p[0].gpu_op_count, p[0].gpu_start_ns, p[0].gpu_end_ns),
            (2, 4, Some(100), Some(320))
        );
        assert_eq!(p[0].kernel_time_ns, 10 + 10 + 20 + 20);
        assert_eq!((p[1].launch_count, p[1].gpu_op_count), (1, 3));
        assert_eq!((p[2].launch_count, p[2].gpu_op_count, p[2].gpu_start_ns), (1, 1, Some(150)));
        assert_eq!((p[3].launch_count, p[3].gpu_op_count), (1, 1));
        assert_eq!(project_with(&k, &m, &NO_MEMOPS.ops, &r, 0), p, "prefix-sum path agrees with the direct pass");
    }

    #[test]
    fn range_devices_are_those_of_the_projected_operations() {
        // Thread 7 launches on devices 0 (api 10), 1 (api 30) and 2 (api 40, unmatched); thread 8 on 1.
        let start = [100, 300, 400, 150];
        let end = [110, 320, 410, 170];
        let thread = [7, 7, 7, 8];
        let api = [10, 30, 40, 15];
        let launch = [1, 2, NULL_I64, 3];
        let dev = [0i32, 1, 2, 1];
        let names = [0u32; 4];
        let k = kernels_view(&dev, &names, [&start, &end, &thread, &api, &launch]);
        let (rt, rs, re) = ([7, 7, 8, 7, 7], [0, 20, 0, 35, 0], [50, 31, 50, 50, NULL_I64]);
        let r = RangesView { thread: &rt, start: &rs, end: &re };
        let d = range_devices(&k, &NO_MEMOPS, &NO_MEMOPS.ops, &r, &[0, 1, 2]);
        assert_eq!(d, vec![vec![0, 1], vec![1], vec![1], vec![], vec![]]);
        // Only the wanted devices are reported.
        assert_eq!(range_devices(&k, &NO_MEMOPS, &NO_MEMOPS.ops, &r, &[1])[0], vec![1]);
    }

    #[test]
    fn both_paths_agree_on_overlapping_ranges() {
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let n = 400;
        let thread: Vec<i64> = (0..n).map(|_| (next() % 3) as i64).collect();
        let api: Vec<i64> = (0..n).map(|_| (next() % 1000) as i64).collect();
        let launch: Vec<i64> =
            (0..n).map(|i| if i % 5 == 0 { NULL_I64 } else { thread[i] * 10_000 + api[i] }).collect();
        let start: Vec<i64> = api.iter().map(|a| a + 10 + (next() % 50) as i64).collect();
        let end: Vec<i64> = start.iter().map(|s| s + 1 + (next() % 30) as i64).collect();
        let dev = vec![0i32; n];
        let names = vec![0u32; n];
        let k = kernels_view(&dev, &names, [&start, &end, &thread, &api, &launch]);
        let m = NO_MEMOPS;
        let rt: Vec<i64> = (0..200).map(|_| (next() % 3) as i64).collect();
        let rs: Vec<i64> = (0..200).map(|_| (next() % 900) as i64).collect();
        let re: Vec<i64> = rs.iter().map(|s| s + (next() % 400) as i64).collect();
        let r = RangesView { thread: &rt, start: &rs, end: &re };
        let direct = project_with(&k, &m, &NO_MEMOPS.ops, &r, usize::MAX / 2);
        assert_eq!(project_with(&k, &m, &NO_MEMOPS.ops, &r, 0), direct);
        // Brute force: every matched op on the thread whose API call started inside the range.
        for (i, row) in direct.iter().enumerate() {
            let inside: Vec<usize> = (0..n)
                .filter(|&j| launch[j] != NULL_I64 && thread[j] == rt[i] && api[j] >= rs[i] && api[j] < re[i])
                .collect();
            assert_eq!(row.gpu_op_count, inside.len() as i64);
            let mut keys: Vec<i64> = inside.iter().map(|&j| launch[j]).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(row.launch_count, keys.len() as i64);
            assert_eq!(row.gpu_start_ns, inside.iter().map(|&j| start[j]).min());
        }
    }

    #[test]
    fn a_graph_execution_is_one_gpu_operation_of_its_range() {
        // Thread 7: a kernel launched at 10 (ends 110) and a graph launched at 20 (runs 200..260); thread 8
        // launched a graph at 25 that no range of thread 7 sees; a graph without a call is never projected.
        let k = kernels_view(&[0], &[0], [&[100], &[110], &[7], &[10], &[1]]);
        let (dev, stream) = ([0i32; 3], [13i32; 3]);
        let graphs = OpsView {
            device: (&dev[..]).into(),
            stream: (&stream[..]).into(),
            start: &[200, 210, 220],
            end: &[260, 270, 280],
            thread: Threads::Keys(&[7, 8, NULL_I64]),
            api_start: &[20, 25, NULL_I64],
            launch: LaunchKeys::Plain(&[2, 3, NULL_I64]),
        };
        let r = RangesView { thread: &[7, 7, 8], start: &[0, 15, 0], end: &[50, 50, 50] };
        let p = project(&k, &NO_MEMOPS, &graphs, &r);
        assert_eq!(
            (p[0].gpu_op_count, p[0].launch_count, p[0].gpu_start_ns, p[0].gpu_end_ns),
            (2, 2, Some(100), Some(260))
        );
        assert_eq!((p[0].kernel_count, p[0].kernel_time_ns, p[0].graph_ns), (1, 10, 60));
        assert_eq!((p[1].gpu_op_count, p[1].kernel_count, p[1].graph_ns), (1, 0, 60));
        assert_eq!((p[2].gpu_op_count, p[2].graph_ns, p[2].gpu_start_ns), (1, 60, Some(210)));
        assert_eq!(project_with(&k, &NO_MEMOPS, &graphs, &r, 0), p, "prefix-sum path agrees");
    }
}
