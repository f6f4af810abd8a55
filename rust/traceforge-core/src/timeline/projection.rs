//! NVTX projection: the GPU work launched from inside each NVTX range.
//!
//! A GPU operation belongs to a range when the API call that launched it started on the range's thread
//! inside `[range start, range end)`. Launches (API calls that launched GPU work) are grouped per thread
//! and sorted by start, so each range is two binary searches plus O(log n) queries on prefix sums and
//! min/max segment trees, whatever the nesting depth.
use super::{KernelsView, MemopsView, RangesView};
use crate::export::NULL_I64;

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
}

/// One API call that launched GPU work.
#[derive(Debug, Clone, Copy)]
struct Launch {
    thread: i64,
    api_start: i64,
    ops: i64,
    kernels: i64,
    kernel_time: i64,
    gpu_start: i64,
    gpu_end: i64,
}

struct MinMaxTree {
    n: usize,
    min: Vec<i64>,
    max: Vec<i64>,
}

impl MinMaxTree {
    fn new(mins: &[i64], maxs: &[i64]) -> Self {
        let n = mins.len();
        let mut min = vec![i64::MAX; 2 * n];
        let mut max = vec![i64::MIN; 2 * n];
        min[n..].copy_from_slice(mins);
        max[n..].copy_from_slice(maxs);
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

fn collect_launches(kernels: &KernelsView<'_>, memops: &MemopsView<'_>) -> Vec<Launch> {
    // (launch key, is_kernel, index) of every matched op, grouped by launch key.
    let mut keyed: Vec<(i64, bool, u32)> = Vec::new();
    for (view, is_kernel) in [(&kernels.ops, true), (&memops.ops, false)] {
        for i in 0..view.len() {
            if view.launch[i] != NULL_I64 && view.thread[i] != NULL_I64 {
                keyed.push((view.launch[i], is_kernel, i as u32));
            }
        }
    }
    keyed.sort_unstable();
    let mut launches: Vec<Launch> = Vec::new();
    let mut prev_key = None;
    for (key, is_kernel, i) in keyed {
        let view = if is_kernel { &kernels.ops } else { &memops.ops };
        let i = i as usize;
        let (s, e) = (view.start[i], view.end[i]);
        if prev_key != Some(key) {
            prev_key = Some(key);
            launches.push(Launch {
                thread: view.thread[i],
                api_start: view.api_start[i],
                ops: 0,
                kernels: 0,
                kernel_time: 0,
                gpu_start: s,
                gpu_end: e,
            });
        }
        let l = launches.last_mut().expect("pushed above");
        l.ops += 1;
        l.gpu_start = l.gpu_start.min(s);
        l.gpu_end = l.gpu_end.max(e);
        if is_kernel {
            l.kernels += 1;
            l.kernel_time += e - s;
        }
    }
    launches
}

/// Project every range of `ranges` onto the GPU work its thread launched inside it.
pub fn project(kernels: &KernelsView<'_>, memops: &MemopsView<'_>, ranges: &RangesView<'_>) -> Vec<ProjectionRow> {
    let mut launches = collect_launches(kernels, memops);
    launches.sort_unstable_by_key(|l| (l.thread, l.api_start));
    let api_start: Vec<i64> = launches.iter().map(|l| l.api_start).collect();
    let threads: Vec<i64> = launches.iter().map(|l| l.thread).collect();
    let mut prefix_ops = vec![0i64; launches.len() + 1];
    let mut prefix_kernels = vec![0i64; launches.len() + 1];
    let mut prefix_time = vec![0i64; launches.len() + 1];
    for (i, l) in launches.iter().enumerate() {
        prefix_ops[i + 1] = prefix_ops[i] + l.ops;
        prefix_kernels[i + 1] = prefix_kernels[i] + l.kernels;
        prefix_time[i + 1] = prefix_time[i] + l.kernel_time;
    }
    let mins: Vec<i64> = launches.iter().map(|l| l.gpu_start).collect();
    let maxs: Vec<i64> = launches.iter().map(|l| l.gpu_end).collect();
    let tree = MinMaxTree::new(&mins, &maxs);

    (0..ranges.start.len())
        .map(|r| {
            let (thread, start, end) = (ranges.thread[r], ranges.start[r], ranges.end[r]);
            // Launches of this thread occupy one contiguous block, sorted by api_start.
            let t_lo = threads.partition_point(|&t| t < thread);
            let t_hi = threads.partition_point(|&t| t <= thread);
            let block = &api_start[t_lo..t_hi];
            let lo = t_lo + block.partition_point(|&s| s < start);
            let hi = t_lo + block.partition_point(|&s| s < end);
            let mut row = ProjectionRow {
                range: r,
                gpu_start_ns: None,
                gpu_end_ns: None,
                gpu_op_count: 0,
                launch_count: 0,
                kernel_count: 0,
                kernel_time_ns: 0,
            };
            if thread != NULL_I64 && end != NULL_I64 && hi > lo {
                let (gs, ge) = tree.query(lo, hi);
                row.gpu_start_ns = Some(gs);
                row.gpu_end_ns = Some(ge);
                row.launch_count = (hi - lo) as i64;
                row.gpu_op_count = prefix_ops[hi] - prefix_ops[lo];
                row.kernel_count = prefix_kernels[hi] - prefix_kernels[lo];
                row.kernel_time_ns = prefix_time[hi] - prefix_time[lo];
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::OpsView;

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
        let k = KernelsView {
            ops: OpsView { device: &dev, stream: &dev, start: &start, end: &end, thread: &thread, api_start: &api, launch: &launch },
            name: &names,
        };
        let empty: [i64; 0] = [];
        let empty32: [i32; 0] = [];
        let m = MemopsView {
            ops: OpsView { device: &empty32, stream: &empty32, start: &empty, end: &empty, thread: &empty, api_start: &empty, launch: &empty },
            op: &[],
            copy_kind: &empty,
            bytes: &empty,
        };
        let rt = [7, 7, 8, 7];
        let rs = [0, 5, 0, 30];
        let re = [50, 20, 50, 31];
        let r = RangesView { thread: &rt, start: &rs, end: &re };
        let p = project(&k, &m, &r);
        assert_eq!((p[0].launch_count, p[0].gpu_op_count, p[0].gpu_start_ns, p[0].gpu_end_ns), (2, 4, Some(100), Some(320)));
        assert_eq!(p[0].kernel_time_ns, 10 + 10 + 20 + 20);
        assert_eq!((p[1].launch_count, p[1].gpu_op_count), (1, 3));
        assert_eq!((p[2].launch_count, p[2].gpu_op_count, p[2].gpu_start_ns), (1, 1, Some(150)));
        assert_eq!((p[3].launch_count, p[3].gpu_op_count), (1, 1));
    }
}
