//! GPU metric samples (`GPU_METRICS`): per-(device, metric) summaries and per-NVTX-range means.
//!
//! Samples are held one series per (device, metric name), each sorted by timestamp. A summary is exact
//! (count, mean, min, max and linear-interpolation percentiles, numpy's default) and needs one copy of
//! one series' values at a time. A range's mean over a metric pools the samples of every device its
//! projected GPU operations ran on with `gpu_start_ns <= ts < gpu_end_ns`: two binary searches and a
//! prefix-sum difference per (range, series).
use crate::ids::NULL_I64;

use super::metric_samples::{sort_shared, SeriesBuilder, Timestamps, Values};
use super::percentile::percentiles_select;

/// The samples of one metric on one device, sorted by (timestamp, value). Held compactly
/// ([`super::metric_samples`]): timestamps shared with the device's other metrics, values narrow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricSeries {
    pub device: i64,
    /// Index into [`GpuMetrics::names`].
    pub metric: u32,
    pub ts: Timestamps,
    /// Raw integer values as stored (NULL as [`NULL_I64`]).
    pub value: Values,
}

impl MetricSeries {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// Every GPU metric sample of a trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuMetrics {
    /// Metric names (`TARGET_INFO_GPU_METRICS.metricName`; None when a sample's metric has no name row),
    /// each once; a series' `metric` indexes them.
    pub names: Vec<Option<String>>,
    /// One series per (device, metric), ordered by (device, name).
    pub series: Vec<MetricSeries>,
}

impl GpuMetrics {
    /// Samples in all.
    pub fn len(&self) -> usize {
        self.series.iter().map(MetricSeries::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.series.iter().all(MetricSeries::is_empty)
    }

    /// The name of metric id `metric`.
    pub fn name(&self, metric: u32) -> Option<&str> {
        self.names.get(metric as usize).and_then(|n| n.as_deref())
    }

    /// The series of `built` (metric ids indexing `names`), ordered by (device, name), each sorted by
    /// timestamp.
    pub fn from_builder(names: Vec<Option<String>>, built: SeriesBuilder) -> GpuMetrics {
        let series = built
            .finish()
            .into_iter()
            .map(|(device, metric, ts, value)| MetricSeries { device, metric, ts, value })
            .collect();
        let mut out = GpuMetrics { names, series };
        out.normalise();
        out
    }

    /// Order the series by (device, name) and sort each by timestamp.
    fn normalise(&mut self) {
        let names = &self.names;
        self.series.sort_by(|a, b| {
            (a.device, names[a.metric as usize].as_deref()).cmp(&(b.device, names[b.metric as usize].as_deref()))
        });
        let mut parts: Vec<(&mut Timestamps, &mut Values)> =
            self.series.iter_mut().map(|s| (&mut s.ts, &mut s.value)).collect();
        sort_shared(&mut parts);
    }

    /// Build from `(device, metric name, ts, value)` samples in any order (tests, re-analysis).
    pub fn from_samples(samples: impl IntoIterator<Item = (i64, Option<String>, i64, i64)>) -> GpuMetrics {
        let (mut names, mut built) = (Vec::new(), SeriesBuilder::default());
        let mut index: std::collections::HashMap<(i64, u32), usize> = std::collections::HashMap::new();
        let mut name_ids: std::collections::HashMap<Option<String>, u32> = std::collections::HashMap::new();
        for (device, name, ts, value) in samples {
            let metric = *name_ids.entry(name.clone()).or_insert_with(|| {
                names.push(name);
                (names.len() - 1) as u32
            });
            let i = *index.entry((device, metric)).or_insert_with(|| built.add(device, metric, device));
            built.push(i, ts, value);
        }
        GpuMetrics::from_builder(names, built)
    }

    /// The distinct devices with samples, ascending.
    pub fn devices(&self) -> Vec<i64> {
        let mut d: Vec<i64> = self.series.iter().map(|s| s.device).collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

/// One `gpu_metric_summary` row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummaryRow {
    pub device: i64,
    pub metric: u32,
    pub sample_count: i64,
    pub mean: Option<f64>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// Count, mean, min, max and p50/p90/p99 of each series (NULL values left out of the statistics).
pub fn summaries(g: &GpuMetrics) -> Vec<MetricSummaryRow> {
    g.series
        .iter()
        .map(|s| {
            let mut values: Vec<i64> = s.value.iter().filter(|&v| v != NULL_I64).collect();
            let n = values.len();
            let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
            let (min, max) = (values.iter().min().copied(), values.iter().max().copied());
            let p = percentiles_select(&mut values, &[0.5, 0.9, 0.99]);
            MetricSummaryRow {
                device: s.device,
                metric: s.metric,
                sample_count: s.len() as i64,
                mean: (n > 0).then(|| sum as f64 / n as f64),
                min,
                max,
                p50: p[0],
                p90: p[1],
                p99: p[2],
            }
        })
        .collect()
}

/// The GPU window of one projected range and the devices its operations ran on.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeWindow {
    /// The range's row in the caller's numbering (the projection's range index).
    pub range: usize,
    pub gpu_start_ns: i64,
    pub gpu_end_ns: i64,
    /// Sorted, distinct.
    pub devices: Vec<i64>,
}

/// Prefix sums of one series' values: `between(lo, hi)` is the (sum, count) of the non-NULL values there.
enum Prefix {
    /// No NULL and every partial sum fits i64.
    Plain(Vec<i64>),
    /// Sums and counts of non-NULL values.
    Wide(Vec<i128>, Vec<u32>),
}

impl Prefix {
    fn of(values: &Values) -> Prefix {
        let mut sums = Vec::with_capacity(values.len() + 1);
        sums.push(0i64);
        let mut acc = 0i64;
        for v in values {
            match acc.checked_add(v) {
                Some(next) if v != NULL_I64 => {
                    acc = next;
                    sums.push(acc);
                }
                _ => return Prefix::wide(values),
            }
        }
        Prefix::Plain(sums)
    }

    fn wide(values: &Values) -> Prefix {
        let mut sums = Vec::with_capacity(values.len() + 1);
        let mut counts = Vec::with_capacity(values.len() + 1);
        let (mut acc, mut cnt) = (0i128, 0u32);
        sums.push(0);
        counts.push(0);
        for v in values {
            if v != NULL_I64 {
                acc += i128::from(v);
                cnt += 1;
            }
            sums.push(acc);
            counts.push(cnt);
        }
        Prefix::Wide(sums, counts)
    }

    fn between(&self, lo: usize, hi: usize) -> (i128, i64) {
        match self {
            Prefix::Plain(s) => (i128::from(s[hi]) - i128::from(s[lo]), (hi - lo) as i64),
            Prefix::Wide(s, c) => (s[hi] - s[lo], i64::from(c[hi] - c[lo])),
        }
    }
}

/// One `nvtx_gpu_metrics` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeMetricRow {
    pub range: usize,
    pub metric: u32,
    /// NULL when no sample fell in the window.
    pub mean: Option<f64>,
    pub samples: i64,
}

/// For each window and each metric sampled on one of its devices: the samples of those devices with
/// `gpu_start_ns <= ts < gpu_end_ns`, pooled (count and plain mean; a row even with no sample). Rows are
/// ordered by window, then metric name.
pub fn range_means(g: &GpuMetrics, windows: &[RangeWindow]) -> Vec<RangeMetricRow> {
    if g.series.is_empty() || windows.is_empty() {
        return Vec::new();
    }
    // Metric ids in name order, so that each window's rows come out sorted by name.
    let mut order: Vec<u32> = (0..g.names.len() as u32).collect();
    order.sort_by(|&a, &b| g.names[a as usize].cmp(&g.names[b as usize]));
    let mut rank = vec![0u32; g.names.len()];
    for (r, &m) in order.iter().enumerate() {
        rank[m as usize] = r as u32;
    }
    // The metric ranks sampled on each device, ascending.
    let mut on_device: std::collections::HashMap<i64, Vec<u32>> = std::collections::HashMap::new();
    for s in &g.series {
        on_device.entry(s.device).or_default().push(rank[s.metric as usize]);
    }
    for ranks in on_device.values_mut() {
        ranks.sort_unstable();
        ranks.dedup();
    }
    // The rows, laid out up front in output order: per window, each metric of its devices by rank;
    // `first[w]..first[w + 1]` are window `w`'s. Series are then taken one at a time (outer loop), so
    // that only one series' prefix sums exist at once, not all of them.
    let mut out = Vec::new();
    let mut row_rank: Vec<u32> = Vec::new();
    let mut first = Vec::with_capacity(windows.len() + 1);
    let mut ranks: Vec<u32> = Vec::new();
    for w in windows {
        first.push(out.len());
        ranks.clear();
        for d in &w.devices {
            ranks.extend(on_device.get(d).into_iter().flatten());
        }
        ranks.sort_unstable();
        ranks.dedup();
        for &r in &ranks {
            out.push(RangeMetricRow { range: w.range, metric: order[r as usize], mean: None, samples: 0 });
            row_rank.push(r);
        }
    }
    first.push(out.len());
    // Exact sums of each row, divided once all series are in.
    let mut sums = vec![0i128; out.len()];
    for s in &g.series {
        // 8 bytes a sample of this series unless it has NULLs or its sum leaves i64 (then 20, exact).
        let prefix = Prefix::of(&s.value);
        let r = rank[s.metric as usize];
        for (wi, w) in windows.iter().enumerate() {
            if w.devices.binary_search(&s.device).is_err() {
                continue;
            }
            let lo = s.ts.partition_point(|&t| t < w.gpu_start_ns);
            let hi = s.ts.partition_point(|&t| t < w.gpu_end_ns).max(lo);
            let (sum, count) = prefix.between(lo, hi);
            let rows = first[wi]..first[wi + 1];
            let at = rows.start + row_rank[rows].binary_search(&r).expect("a row per metric of the window's devices");
            sums[at] += sum;
            out[at].samples += count;
        }
    }
    for (row, sum) in out.iter_mut().zip(sums) {
        row.mean = (row.samples > 0).then(|| sum as f64 / row.samples as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edges export's samples: metric M1 on devices 0 and 1 (tests/test_host_evidence.py).
    fn edges() -> GpuMetrics {
        let s = [(0, -10, 1), (0, 100, 2), (0, 500, 4), (0, 1099, 8), (0, 1100, 16), (0, 5000, 32), (1, 500, 64)];
        GpuMetrics::from_samples(s.iter().rev().map(|&(d, t, v)| (d, Some("M1".to_string()), t, v)))
    }

    #[test]
    fn series_are_sorted_and_summarised_exactly() {
        let g = edges();
        assert_eq!(g.series.len(), 2);
        assert_eq!(*g.series[0].ts, [-10, 100, 500, 1099, 1100, 5000]);
        let s = summaries(&g);
        assert_eq!(s[0].sample_count, 6);
        assert_eq!(s[0].mean, Some(10.5));
        assert_eq!((s[0].min, s[0].max), (Some(1), Some(32)));
        assert_eq!(s[0].p50, Some(6.0));
        assert_eq!(s[0].p90, Some(24.0));
        assert!((s[0].p99.unwrap() - 31.2).abs() < 1e-12);
        assert_eq!((s[1].device, s[1].sample_count, s[1].p99), (1, 1, Some(64.0)));
    }

    #[test]
    fn windows_are_half_open_pooled_over_their_devices_and_kept_when_empty() {
        let g = edges();
        let w = |range, s, e, devices: &[i64]| RangeWindow {
            range,
            gpu_start_ns: s,
            gpu_end_ns: e,
            devices: devices.to_vec(),
        };
        let rows =
            range_means(&g, &[w(0, 100, 1100, &[0]), w(1, 2500, 3100, &[0]), w(2, 0, 600, &[0, 1]), w(3, 0, 9, &[2])]);
        assert_eq!(rows.len(), 3, "{rows:?}"); // the device-2 window has no metric
        assert_eq!((rows[0].samples, rows[0].mean), (3, Some(14.0 / 3.0)));
        assert_eq!((rows[1].range, rows[1].samples, rows[1].mean), (1, 0, None));
        assert_eq!((rows[2].samples, rows[2].mean), (3, Some((2.0 + 4.0 + 64.0) / 3.0)));
    }

    #[test]
    fn nulls_and_huge_values_take_the_wide_sums() {
        let big = i64::MAX / 2;
        let g =
            GpuMetrics::from_samples([(0, None, 1, big), (0, None, 2, big), (0, None, 3, big), (0, None, 4, NULL_I64)]);
        let w = RangeWindow { range: 0, gpu_start_ns: 0, gpu_end_ns: 10, devices: vec![0] };
        let rows = range_means(&g, &[w]);
        assert_eq!((rows[0].samples, rows[0].mean), (3, Some(big as f64)));
        let s = summaries(&g);
        assert_eq!((s[0].sample_count, s[0].mean, s[0].max), (4, Some(big as f64), Some(big)));
    }

    #[test]
    fn range_means_match_a_naive_pooling() {
        // 3 devices x 4 metrics (names out of order, one unnamed), NULLs, unsorted input.
        let names = [Some("zeta"), None, Some("alpha"), Some("mid")];
        let mut samples = Vec::new();
        let mut x = 7i64;
        for t in (0..300).rev() {
            for d in 0..3i64 {
                for (m, name) in names.iter().enumerate() {
                    if d == 2 && m == 3 {
                        continue; // device 2 lacks metric "mid"
                    }
                    x = (x * 1103515245 + 12345) % 2147483648;
                    let v = if x % 17 == 0 { NULL_I64 } else { x % 70000 };
                    samples.push((d, name.map(str::to_string), t * 10 + d, v));
                }
            }
        }
        let g = GpuMetrics::from_samples(samples.clone());
        let w = |range, s, e, devices: &[i64]| RangeWindow {
            range,
            gpu_start_ns: s,
            gpu_end_ns: e,
            devices: devices.to_vec(),
        };
        let windows = [
            w(0, 0, 1000, &[0]),
            w(1, 500, 2500, &[1, 2]),
            w(2, -5, 3, &[0, 1, 2]),
            w(3, 40, 40, &[2]),
            w(4, 0, 9, &[7]),
        ];
        let got = range_means(&g, &windows);
        let mut want = Vec::new();
        for win in &windows {
            let mut by_name: Vec<Option<&str>> = names.to_vec();
            by_name.sort();
            for name in by_name {
                let on: Vec<_> =
                    samples.iter().filter(|s| s.1.as_deref() == name && win.devices.contains(&s.0)).collect();
                if on.is_empty() {
                    continue;
                }
                let vals: Vec<i64> = on
                    .iter()
                    .filter(|s| win.gpu_start_ns <= s.2 && s.2 < win.gpu_end_ns && s.3 != NULL_I64)
                    .map(|s| s.3)
                    .collect();
                let mean = (!vals.is_empty()).then(|| vals.iter().sum::<i64>() as f64 / vals.len() as f64);
                want.push((win.range, name, mean, vals.len() as i64));
            }
        }
        let got: Vec<_> = got.iter().map(|r| (r.range, g.name(r.metric), r.mean, r.samples)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn no_samples_no_rows() {
        let g = GpuMetrics::default();
        assert!(summaries(&g).is_empty());
        let w = RangeWindow { range: 0, gpu_start_ns: 0, gpu_end_ns: 10, devices: vec![0] };
        assert!(range_means(&g, &[w]).is_empty());
    }
}
