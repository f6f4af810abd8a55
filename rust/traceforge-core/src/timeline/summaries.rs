//! Kernel summaries per (device, name) and memop summaries per (device, op, copy kind): what
//! `nsys stats` reports as `gpukernsum` and `gpumemtimesum`/`gpumemsizesum`.
use super::grouping::group_by;
use super::percentile::percentiles_select;
use crate::ids::NULL_I64;
use crate::views::{launch_split, KernelsView, MemopsView};

/// `kernel_summary` row: what `nsys stats --report gpukernsum` shows, grouped by name only.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSummaryRow {
    pub device: i64,
    pub name: u32,
    pub count: i64,
    pub total_ns: i64,
    pub avg_ns: f64,
    pub median_ns: f64,
    pub min_ns: i64,
    pub max_ns: i64,
    pub stddev_ns: f64,
    pub share: Option<f64>,
    /// The launch split ([`crate::views::launch_split`], `nsys stats --report kernexecsum`): kernels whose
    /// launching call (and its end) is known, the mean and median of those calls' durations, the kernels
    /// with a queue time and its mean and median over them.
    pub launched_count: i64,
    pub api_avg_ns: Option<f64>,
    pub api_median_ns: Option<f64>,
    pub queue_count: i64,
    pub queue_avg_ns: Option<f64>,
    pub queue_median_ns: Option<f64>,
}

/// Mean and median of `values` (None for both when empty).
fn mean_median(values: &mut [i64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    (Some(mean), percentiles_select(values, &[0.5])[0])
}

/// `memop_summary` row.
#[derive(Debug, Clone, PartialEq)]
pub struct MemopSummaryRow {
    pub device: i64,
    pub op: u8,
    pub copy_kind: i64,
    pub count: i64,
    pub total_ns: i64,
    pub total_bytes: i64,
    pub avg_ns: f64,
    pub min_ns: i64,
    pub max_ns: i64,
    pub bandwidth_gbps: Option<f64>,
}

/// Kernel summary per (device, name) and memop summary per (device, op, copy kind); kernel shares unset.
pub(crate) fn summaries(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    low_memory_above: usize,
) -> (Vec<KernelSummaryRow>, Vec<MemopSummaryRow>) {
    // Kernel summary per (device, name).
    let (k, m) = (&kernels.ops, &memops.ops);
    let mut kernel_summary = Vec::new();
    for ((dev, name), members) in group_by(k.len(), |i| (k.device.get(i), kernels.name.get(i)), low_memory_above) {
        let mut d: Vec<i64> = members.iter().map(|&i| k.end[i as usize] - k.start[i as usize]).collect();
        let (min_ns, max_ns) = (d.iter().min().copied().unwrap_or(0), d.iter().max().copied().unwrap_or(0));
        let median_ns = percentiles_select(&mut d, &[0.5])[0].unwrap_or(0.0);
        let n = d.len() as i64;
        let total: i64 = d.iter().sum();
        let mean = total as f64 / n as f64;
        let var = if n > 1 { d.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        drop(d);
        let (mut api, mut queue) = (Vec::new(), Vec::new());
        for &i in &members {
            let i = i as usize;
            let end = kernels.api_end.get(i).copied().unwrap_or(NULL_I64);
            if let Some((a, q)) = launch_split(k.api_start[i], end, k.start[i]) {
                api.push(a);
                queue.extend(q);
            }
        }
        let (api_avg_ns, api_median_ns) = mean_median(&mut api);
        let (queue_avg_ns, queue_median_ns) = mean_median(&mut queue);
        kernel_summary.push(KernelSummaryRow {
            device: dev.into(),
            name,
            count: n,
            total_ns: total,
            avg_ns: mean,
            median_ns,
            min_ns,
            max_ns,
            stddev_ns: var.sqrt(),
            share: None, // set by `derive` from the device's kernel time
            launched_count: api.len() as i64,
            api_avg_ns,
            api_median_ns,
            queue_count: queue.len() as i64,
            queue_avg_ns,
            queue_median_ns,
        });
    }

    // Memop summary per (device, op, copy kind).
    let mut memop_summary = Vec::new();
    let memop_key =
        |i: usize| (m.device.get(i), memops.op[i], if memops.op[i] == 0 { memops.copy_kind[i] } else { NULL_I64 });
    for ((dev, op, kind), members) in group_by(m.len(), memop_key, low_memory_above) {
        let d: Vec<i64> = members.iter().map(|&i| m.end[i as usize] - m.start[i as usize]).collect();
        let total: i64 = d.iter().sum();
        let bytes: i64 = members.iter().map(|&i| memops.bytes[i as usize]).filter(|&b| b != NULL_I64).sum();
        memop_summary.push(MemopSummaryRow {
            device: dev.into(),
            op,
            copy_kind: kind,
            count: d.len() as i64,
            total_ns: total,
            total_bytes: bytes,
            avg_ns: total as f64 / d.len() as f64,
            min_ns: *d.iter().min().unwrap_or(&0),
            max_ns: *d.iter().max().unwrap_or(&0),
            bandwidth_gbps: (total > 0).then(|| bytes as f64 / total as f64),
        });
    }
    (kernel_summary, memop_summary)
}
