//! Timeline metrics over one trace's GPU operations, per device and per stream.
//!
//! The input is a neutral column view ([`crate::views`]) that both the export reader and re-analysis
//! from the store produce, so one implementation serves both. Definitions (half-open intervals,
//! nanoseconds) are those of `docs/schema.md`. Each derived table has its module: [`metrics`] (device
//! and stream metrics, concurrency levels), [`gaps`], [`summaries`], [`projection`] (NVTX ranges onto
//! the GPU work they launched), over the [`nvtx`] range model; [`sweep`], [`percentile`] and
//! [`grouping`] are their shared algorithms. [`derive`] computes them all.
pub mod gaps;
pub mod gpu_metrics;
pub mod graphs;
pub(crate) mod grouping;
pub mod host;
pub mod idle;
pub mod metric_samples;
pub mod metrics;
pub mod nvtx;
pub mod percentile;
pub mod projection;
pub mod summaries;
pub mod sweep;

pub use gaps::{Gaps, InOrderGaps};
pub use graphs::{GraphLaunch, GraphLaunches, GraphSummaryRow};
pub use metrics::MetricRow;
pub use nvtx::{NvtxEventColumns, NvtxRanges};
pub use summaries::{KernelSummaryRow, MemopSummaryRow};

use crate::options::IngestOptions;
use crate::views::{KernelsView, MemopsView, OpsView, RangesView};

/// Everything derived from one trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub device_metrics: Vec<MetricRow>,
    pub stream_metrics: Vec<MetricRow>,
    /// (device, level, time_ns)
    pub concurrency_levels: Vec<(i64, i64, i64)>,
    pub gaps: Gaps,
    pub kernel_summary: Vec<KernelSummaryRow>,
    pub memop_summary: Vec<MemopSummaryRow>,
    pub projection: Vec<projection::ProjectionRow>,
    /// Per (device, graph id) over the graph launches (set by the caller from [`graphs::graph_summary`]).
    pub graph_summary: Vec<GraphSummaryRow>,
}

/// Compute every derived table of a trace; beyond `options.low_memory_above` operations the parts run
/// one after another, with a lower peak. `graphs` are the whole-graph executions (graph mode): GPU
/// activities next to the kernels for the timeline metrics, GPU operations for the NVTX projection.
pub fn derive(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    graphs: &OpsView<'_>,
    ranges: &RangesView<'_>,
    options: &IngestOptions,
) -> Derived {
    let low_memory = options.low_memory(kernels.ops.len() + memops.ops.len() + graphs.len());
    derive_with(kernels, memops, graphs, ranges, !low_memory, options.low_memory_above)
}

/// [`derive`], its parts side by side when `parallel`.
fn derive_with(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    graphs: &OpsView<'_>,
    ranges: &RangesView<'_>,
    parallel: bool,
    low_memory_above: usize,
) -> Derived {
    let device_part = || metrics::device_and_stream_metrics(kernels, memops, graphs, low_memory_above);
    let summary_part = || summaries::summaries(kernels, memops, low_memory_above);
    let projection_part = || projection::project(kernels, memops, graphs, ranges);
    // The three parts read the same columns and write disjoint tables. Side by side they finish sooner,
    // but their working buffers (tens of bytes per operation) then add up instead of taking turns: large
    // traces run them one after another so that peak memory stays bounded.
    let ((mut out, (mut kernel_summary, memop_summary)), projection) = if parallel {
        rayon::join(|| rayon::join(device_part, summary_part), projection_part)
    } else {
        // The projection's buffers go first: the device part ends holding the gaps of devices whose kernels
        // run out of order (16 bytes each).
        let projection = projection_part();
        let summaries = summary_part();
        ((device_part(), summaries), projection)
    };
    for row in &mut kernel_summary {
        let device_total = out.device_metrics.iter().find(|d| d.device == row.device).map_or(0, |d| d.kernel_time_ns);
        row.share = (device_total > 0).then(|| row.total_ns as f64 / device_total as f64);
    }
    out.kernel_summary = kernel_summary;
    out.memop_summary = memop_summary;
    out.projection = projection;
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the timeline's unit tests.
    use crate::views::{OpsView, Threads};

    /// No graph executions.
    pub(crate) fn no_graphs() -> OpsView<'static> {
        plain_ops(&[], &[], &[], &[], &[], &[], &[])
    }

    /// Operations from spelled-out columns.
    pub(crate) fn plain_ops<'a>(
        device: &'a [i32],
        stream: &'a [i32],
        start: &'a [i64],
        end: &'a [i64],
        thread: &'a [i64],
        api_start: &'a [i64],
        launch: &'a [i64],
    ) -> OpsView<'a> {
        OpsView {
            device: device.into(),
            stream: stream.into(),
            start,
            end,
            thread: Threads::Keys(thread),
            api_start,
            launch: launch.into(),
        }
    }

    /// A small deterministic generator (no dependency needed for a test's random numbers).
    pub(crate) struct Lcg(pub(crate) u64);
    impl Lcg {
        pub(crate) fn next(&mut self, below: i64) -> i64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % below as u64) as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{no_graphs, plain_ops, Lcg};
    use super::*;
    use crate::ids::NULL_I64;
    use crate::views::{OpsView, Threads, NO_THREAD};

    #[test]
    fn parts_side_by_side_or_in_turn_give_the_same_tables() {
        let mut rng = Lcg(7);
        let n = 5_000;
        let device: Vec<i32> = (0..n).map(|_| rng.next(3) as i32).collect();
        let stream: Vec<i32> = (0..n).map(|_| rng.next(4) as i32).collect();
        let start: Vec<i64> = (0..n).map(|_| rng.next(1_000_000)).collect();
        let end: Vec<i64> = start.iter().map(|&s| s + rng.next(5_000)).collect();
        let thread: Vec<i64> = (0..n).map(|_| if rng.next(10) == 0 { NULL_I64 } else { rng.next(3) }).collect();
        let api_start: Vec<i64> = start.iter().map(|&s| s - rng.next(3_000) - 1).collect();
        let launch: Vec<i64> = (0..n as i64).collect();
        let name: Vec<u32> = (0..n).map(|_| rng.next(20) as u32).collect();
        let ops = plain_ops(&device, &stream, &start, &end, &thread, &api_start, &launch);
        // Calls end before, at or after their kernel's start (queue times of every sign), some unknown.
        let api_end: Vec<i64> =
            api_start.iter().map(|&a| if rng.next(20) == 0 { NULL_I64 } else { a + rng.next(4_000) }).collect();
        let kernels = KernelsView { ops, name: (&name).into(), api_end: &api_end };
        let m = 300;
        let (op, copy_kind, bytes): (Vec<u8>, Vec<i64>, Vec<i64>) = (0..m)
            .map(|_| (rng.next(2) as u8, rng.next(4) + 1, rng.next(1 << 20)))
            .fold((Vec::new(), Vec::new(), Vec::new()), |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            });
        let memops = MemopsView {
            ops: plain_ops(
                &device[..m],
                &stream[..m],
                &start[..m],
                &end[..m],
                &thread[..m],
                &api_start[..m],
                &launch[..m],
            ),
            op: &op,
            copy_kind: &copy_kind,
            bytes: &bytes,
        };
        let r_thread: Vec<i64> = (0..200).map(|_| rng.next(3)).collect();
        let r_start: Vec<i64> = (0..200).map(|_| rng.next(1_000_000)).collect();
        let r_end: Vec<i64> = r_start.iter().map(|&s| s + rng.next(200_000)).collect();
        let ranges = RangesView { thread: &r_thread, start: &r_start, end: &r_end };

        let side_by_side = derive_with(&kernels, &memops, &no_graphs(), &ranges, true, usize::MAX);
        let in_turn = derive_with(&kernels, &memops, &no_graphs(), &ranges, false, usize::MAX);
        assert_eq!(side_by_side, in_turn);
        // The low-memory way (no per-row group memory, percentiles found without a copy) agrees too.
        assert_eq!(derive_with(&kernels, &memops, &no_graphs(), &ranges, false, 0), side_by_side);
        // Threads held as ids into their distinct keys (as ingest holds them) give the same tables.
        let mut keys: Vec<i64> = thread.iter().copied().filter(|&t| t != NULL_I64).collect();
        keys.sort_unstable();
        keys.dedup();
        let ids: Vec<u32> = thread.iter().map(|&t| keys.binary_search(&t).map_or(NO_THREAD, |i| i as u32)).collect();
        let indexed_kernels = KernelsView {
            ops: OpsView { thread: Threads::Indexed { ids: &ids, keys: &keys }, ..kernels.ops },
            ..kernels
        };
        let indexed_memops = MemopsView {
            ops: OpsView { thread: Threads::Indexed { ids: &ids[..m], keys: &keys }, ..memops.ops },
            ..memops
        };
        assert_eq!(
            derive_with(&indexed_kernels, &indexed_memops, &no_graphs(), &ranges, true, usize::MAX),
            side_by_side
        );
        assert_eq!(side_by_side.device_metrics.len(), 3);
        assert!(side_by_side.kernel_summary.iter().all(|r| r.share.is_some_and(|s| s > 0.0 && s <= 1.0)));
        assert!(side_by_side.projection.iter().any(|r| r.gpu_op_count > 0));
    }
}
