//! CUDA graph launches: one row per graph execution in either capture mode, and their summary per
//! (device, graph).
//!
//! Graph mode (`--cuda-graph-trace=graph`): each `CUPTI_ACTIVITY_KIND_GRAPH_TRACE` row is one execution,
//! and nsys writes no kernel rows for the graph's kernels. Node mode (`--cuda-graph-trace=node`): no such
//! row; the graph's kernels are ordinary kernels with a `graphNodeId` and the correlation id of their
//! `cudaGraphLaunch`, so one execution is the kernels of one (pid, correlationId, device).
use super::grouping::group_by;
use super::percentile::percentiles_select;
use crate::ids::NULL_I64;

/// The `graph_launches` rows, column-major ([`NULL_I64`] for NULL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphLaunches {
    pub device: Vec<i64>,
    pub stream: Vec<i64>,
    pub graph_id: Vec<i64>,
    pub graph_exec_id: Vec<i64>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub pid: Vec<i64>,
    pub correlation: Vec<i64>,
    /// Thread of the launching API call.
    pub launch_tid: Vec<i64>,
    pub api_start: Vec<i64>,
    /// Node mode: the kernels the launch ran and their summed durations; NULL in graph mode.
    pub kernel_count: Vec<i64>,
    pub kernel_ns: Vec<i64>,
}

/// One graph execution (a row of [`GraphLaunches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphLaunch {
    pub device: i64,
    pub stream: i64,
    pub graph_id: i64,
    pub graph_exec_id: i64,
    pub start: i64,
    pub end: i64,
    pub pid: i64,
    pub correlation: i64,
    pub launch_tid: i64,
    pub api_start: i64,
    pub kernel_count: i64,
    pub kernel_ns: i64,
}

/// A kernel that ran as a node of a CUDA graph (node mode), with its launching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeKernel {
    pub pid: i64,
    pub correlation: i64,
    pub device: i64,
    pub stream: i64,
    pub start: i64,
    pub end: i64,
    /// `graphNodeId`: `graphId << 32 | node index` (observed, not documented by NVIDIA).
    pub node: i64,
    /// Launching thread key `(pid << 24) | tid`, or NULL.
    pub thread: i64,
    pub api_start: i64,
}

impl GraphLaunches {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// Append one row.
    pub fn push(&mut self, r: GraphLaunch) {
        self.device.push(r.device);
        self.stream.push(r.stream);
        self.graph_id.push(r.graph_id);
        self.graph_exec_id.push(r.graph_exec_id);
        self.start.push(r.start);
        self.end.push(r.end);
        self.pid.push(r.pid);
        self.correlation.push(r.correlation);
        self.launch_tid.push(r.launch_tid);
        self.api_start.push(r.api_start);
        self.kernel_count.push(r.kernel_count);
        self.kernel_ns.push(r.kernel_ns);
    }

    /// Row `i`.
    pub fn get(&self, i: usize) -> GraphLaunch {
        GraphLaunch {
            device: self.device[i],
            stream: self.stream[i],
            graph_id: self.graph_id[i],
            graph_exec_id: self.graph_exec_id[i],
            start: self.start[i],
            end: self.end[i],
            pid: self.pid[i],
            correlation: self.correlation[i],
            launch_tid: self.launch_tid[i],
            api_start: self.api_start[i],
            kernel_count: self.kernel_count[i],
            kernel_ns: self.kernel_ns[i],
        }
    }

    /// Add the node-mode executions: `kernels` (graph-node kernels, in export order) grouped by (pid,
    /// correlationId, device). An execution starts at its earliest kernel's start and ends at the latest
    /// end; its stream is the earliest kernel's (lowest stream, then first in export order, on a tie), its
    /// `graph_exec_id` that kernel's `graphNodeId >> 32` and its `graph_id` the same of the node it was
    /// cloned from (`origin`, NULL_I64 when none: then the node's own).
    pub fn add_node_mode(&mut self, kernels: &[NodeKernel], origin: impl Fn(i64) -> i64) {
        let mut order: Vec<usize> = (0..kernels.len()).collect();
        order.sort_by_key(|&i| {
            let k = &kernels[i];
            (k.pid, k.correlation, k.device, k.start, k.stream, i)
        });
        let key = |i: usize| (kernels[i].pid, kernels[i].correlation, kernels[i].device);
        let mut lo = 0;
        while lo < order.len() {
            let hi = lo + order[lo..].iter().take_while(|&&i| key(i) == key(order[lo])).count();
            let group = &order[lo..hi];
            lo = hi;
            let first = &kernels[group[0]];
            let original = origin(first.node);
            let graph_of = |node: i64| node >> 32;
            self.push(GraphLaunch {
                device: first.device,
                stream: first.stream,
                graph_id: graph_of(if original == NULL_I64 { first.node } else { original }),
                graph_exec_id: graph_of(first.node),
                start: first.start,
                end: group.iter().map(|&i| kernels[i].end).max().unwrap_or(first.end),
                pid: first.pid,
                correlation: first.correlation,
                launch_tid: if first.thread == NULL_I64 { NULL_I64 } else { first.thread & 0xFF_FFFF },
                api_start: first.api_start,
                kernel_count: group.len() as i64,
                kernel_ns: group.iter().map(|&i| kernels[i].end - kernels[i].start).sum(),
            });
        }
    }

    /// The rows ordered by (device, start, stream, pid).
    pub fn sorted(&self) -> GraphLaunches {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| (self.device[i], self.start[i], self.stream[i], self.pid[i], i));
        let mut out = GraphLaunches::default();
        for i in order {
            out.push(self.get(i));
        }
        out
    }
}

/// `graph_summary` row: the graph analogue of a `kernel_summary` row.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSummaryRow {
    pub device: i64,
    pub graph_id: i64,
    pub count: i64,
    pub total_ns: i64,
    pub avg_ns: f64,
    pub median_ns: f64,
    pub min_ns: i64,
    pub max_ns: i64,
}

/// Count, total, average, median, minimum and maximum of `end − start` per (device, graph id) over every
/// graph launch, ordered by device and graph.
pub fn graph_summary(launches: &GraphLaunches) -> Vec<GraphSummaryRow> {
    let mut rows = Vec::new();
    for ((device, graph_id), members) in
        group_by(launches.len(), |i| (launches.device[i], launches.graph_id[i]), usize::MAX)
    {
        let mut d: Vec<i64> = members.iter().map(|&i| launches.end[i as usize] - launches.start[i as usize]).collect();
        let total: i64 = d.iter().sum();
        let (min_ns, max_ns) = (d.iter().min().copied().unwrap_or(0), d.iter().max().copied().unwrap_or(0));
        let median_ns = percentiles_select(&mut d, &[0.5])[0].unwrap_or(0.0);
        rows.push(GraphSummaryRow {
            device,
            graph_id,
            count: d.len() as i64,
            total_ns: total,
            avg_ns: total as f64 / d.len() as f64,
            median_ns,
            min_ns,
            max_ns,
        });
    }
    rows.sort_by_key(|r| (r.device, r.graph_id));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_kernel(correlation: i64, stream: i64, start: i64, end: i64, node: i64) -> NodeKernel {
        NodeKernel { pid: 5, correlation, device: 0, stream, start, end, node, thread: (5 << 24) | 9, api_start: 1 }
    }

    #[test]
    fn node_mode_kernels_of_one_launch_make_one_execution() {
        // Launch 692 ran nodes 2<<32 | 0..2 (cloned from graph 1's nodes), launch 694 the same later; a
        // kernel of launch 694 on another stream starts with the first at 300: the lower stream wins.
        let kernels = [
            node_kernel(692, 13, 100, 110, 2 << 32),
            node_kernel(692, 13, 110, 125, (2 << 32) | 1),
            node_kernel(694, 14, 300, 305, (2 << 32) | 1),
            node_kernel(694, 13, 300, 320, 2 << 32),
        ];
        let origin = |node: i64| if node >> 32 == 2 { (1 << 32) | (node & 0xFFFF_FFFF) } else { NULL_I64 };
        let mut g = GraphLaunches::default();
        g.add_node_mode(&kernels, origin);
        let g = g.sorted();
        assert_eq!(g.len(), 2);
        let (a, b) = (g.get(0), g.get(1));
        assert_eq!((a.start, a.end, a.stream, a.kernel_count, a.kernel_ns), (100, 125, 13, 2, 25));
        assert_eq!((a.graph_id, a.graph_exec_id, a.launch_tid, a.api_start), (1, 2, 9, 1));
        assert_eq!((b.start, b.end, b.stream, b.kernel_count, b.kernel_ns), (300, 320, 13, 2, 25));
        // Without clone information the node's own graph is the graph.
        let mut plain = GraphLaunches::default();
        plain.add_node_mode(&kernels[..2], |_| NULL_I64);
        assert_eq!((plain.graph_id[0], plain.graph_exec_id[0]), (2, 2));

        let summary = graph_summary(&g);
        assert_eq!(summary.len(), 1);
        let s = &summary[0];
        assert_eq!((s.count, s.total_ns, s.min_ns, s.max_ns), (2, 45, 20, 25));
        assert_eq!((s.avg_ns, s.median_ns), (22.5, 22.5));
    }
}
