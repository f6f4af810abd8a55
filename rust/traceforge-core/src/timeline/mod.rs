//! Timeline metrics over one trace's GPU operations, per device and per stream.
//!
//! The input is a neutral column view ([`KernelsView`], [`MemopsView`], [`RangesView`]) that both the
//! export reader and re-analysis from the store produce, so one implementation serves both. Definitions
//! (half-open intervals, nanoseconds) are those of `docs/schema.md`.
pub mod percentile;
pub mod projection;
pub mod sweep;

use crate::export::NULL_I64;
use percentile::{percentiles_of, percentiles_select};

/// Columns shared by every GPU operation. `thread` is the launching API call's thread key
/// `(pid << 24) | tid`, `api_start` its start, `launch` the launch key `(pid << 40) | correlationId`;
/// all three are [`NULL_I64`] when no API call matched.
#[derive(Debug, Clone, Copy)]
pub struct OpsView<'a> {
    pub device: Column<'a, i32>,
    pub stream: Column<'a, i32>,
    pub start: &'a [i64],
    pub end: &'a [i64],
    pub thread: Threads<'a>,
    pub api_start: &'a [i64],
    pub launch: LaunchKeys<'a>,
}

/// One value per operation: spelled out, or an id per operation into a few distinct values (how ingest
/// holds what the kernels of one shape share: device, stream, name and process, 4 bytes a kernel for all).
#[derive(Debug, Clone, Copy)]
pub enum Column<'a, T> {
    Plain(&'a [T]),
    Indexed { ids: &'a [u32], values: &'a [T] },
}

impl<T: Copy> Column<'_, T> {
    #[inline]
    pub fn get(&self, i: usize) -> T {
        match self {
            Column::Plain(values) => values[i],
            Column::Indexed { ids, values } => values[ids[i] as usize],
        }
    }
}

impl<'a, T> From<&'a [T]> for Column<'a, T> {
    fn from(values: &'a [T]) -> Self {
        Column::Plain(values)
    }
}

impl<'a, T> From<&'a Vec<T>> for Column<'a, T> {
    fn from(values: &'a Vec<T>) -> Self {
        Column::Plain(values)
    }
}

/// Correlation ids held in 4 bytes each: [`Correlations::WIDE`] marks an id that is NULL or does not fit,
/// and then `wide` holds it (by operation index, ascending) unless it is NULL.
#[derive(Debug, Clone, Copy)]
pub struct Correlations<'a> {
    pub narrow: &'a [u32],
    pub wide: &'a [(u32, i64)],
}

impl Correlations<'_> {
    pub const WIDE: u32 = u32::MAX;

    /// The correlation id of operation `i` ([`NULL_I64`] when none).
    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self.narrow[i] {
            Self::WIDE => match self.wide.binary_search_by_key(&(i as u32), |x| x.0) {
                Ok(pos) => self.wide[pos].1,
                Err(_) => NULL_I64,
            },
            c => i64::from(c),
        }
    }
}

/// The launch key `(pid << 40) | correlationId` of each operation: spelled out, or composed from the
/// operation's process and correlation id (so ingest holds no 8-byte key per kernel).
#[derive(Debug, Clone, Copy)]
pub enum LaunchKeys<'a> {
    Plain(&'a [i64]),
    Composed { pid: Column<'a, i64>, correlation: Correlations<'a> },
}

impl LaunchKeys<'_> {
    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            LaunchKeys::Plain(keys) => keys[i],
            LaunchKeys::Composed { pid, correlation } => {
                crate::export::events::launch_key(pid.get(i), correlation.get(i))
            }
        }
    }
}

impl<'a> From<&'a [i64]> for LaunchKeys<'a> {
    fn from(keys: &'a [i64]) -> Self {
        LaunchKeys::Plain(keys)
    }
}

impl<'a> From<&'a Vec<i64>> for LaunchKeys<'a> {
    fn from(keys: &'a Vec<i64>) -> Self {
        LaunchKeys::Plain(keys)
    }
}

/// The launching thread key of each operation: spelled out, or as an index into the few distinct keys
/// (how ingest holds them, 4 bytes an operation).
#[derive(Debug, Clone, Copy)]
pub enum Threads<'a> {
    Keys(&'a [i64]),
    /// `ids[i]` indexes `keys`; [`NO_THREAD`] where no API call matched.
    Indexed {
        ids: &'a [u32],
        keys: &'a [i64],
    },
}

/// A [`Threads::Indexed`] id meaning "no launching thread".
pub const NO_THREAD: u32 = u32::MAX;

impl Threads<'_> {
    /// Thread key of operation `i` ([`NULL_I64`] when none).
    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Threads::Keys(keys) => keys[i],
            Threads::Indexed { ids, keys } => match ids[i] {
                NO_THREAD => NULL_I64,
                id => keys[id as usize],
            },
        }
    }
}

impl OpsView<'_> {
    pub fn len(&self) -> usize {
        self.start.len()
    }
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// Kernels: the shared columns plus an interned name (index into the names slice given to [`derive`]).
#[derive(Debug, Clone, Copy)]
pub struct KernelsView<'a> {
    pub ops: OpsView<'a>,
    pub name: Column<'a, u32>,
}

/// Memcpy and memset operations.
#[derive(Debug, Clone, Copy)]
pub struct MemopsView<'a> {
    pub ops: OpsView<'a>,
    /// 0 = memcpy, 1 = memset.
    pub op: &'a [u8],
    /// CUPTI copy kind id (memcpy only).
    pub copy_kind: &'a [i64],
    pub bytes: &'a [i64],
}

/// NVTX ranges eligible for projection (push/pop and start/end with an end).
#[derive(Debug, Clone, Copy)]
pub struct RangesView<'a> {
    pub thread: &'a [i64],
    pub start: &'a [i64],
    pub end: &'a [i64],
}

/// Kernel and memop metrics of one device or one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricRow {
    pub device: i64,
    pub stream: Option<i64>,
    pub kernel_count: i64,
    pub kernel_time_ns: i64,
    pub span_ns: Option<i64>,
    pub first_start_ns: Option<i64>,
    pub last_end_ns: Option<i64>,
    pub busy_ns: i64,
    pub utilization: Option<f64>,
    pub max_concurrency: i64,
    pub overlap_ns: i64,
    pub gap_count: i64,
    pub gap_total_ns: i64,
    pub gap_p50_ns: Option<f64>,
    pub gap_p90_ns: Option<f64>,
    pub gap_p99_ns: Option<f64>,
    pub gap_max_ns: Option<i64>,
    pub memcpy_count: i64,
    pub memcpy_ns: i64,
    pub memcpy_bytes: i64,
    pub memset_count: i64,
    pub memset_ns: i64,
    pub memset_bytes: i64,
    pub launch_latency_p50_ns: Option<f64>,
    pub launch_latency_p90_ns: Option<f64>,
    pub launch_latency_p99_ns: Option<f64>,
    pub launch_matched: i64,
    pub stream_count: i64,
}

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

/// Idle gaps of every device: one per kernel boundary at worst. The gaps of a device whose kernels run
/// in order are not stored: [`InOrderGaps`] finds them again in one pass when they are written. Other
/// devices' gaps are stored, 16 bytes a gap (the device is stored once per run of gaps, not per gap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gaps {
    /// `(device, end)`: gaps `previous end..end` belong to `device`.
    pub device_runs: Vec<(i64, usize)>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    /// Devices whose gaps are found again by [`InOrderGaps`] instead of stored, ascending.
    pub in_order_devices: Vec<i32>,
}

impl Gaps {
    pub fn push(&mut self, device: i64, start: i64, end: i64) {
        self.start.push(start);
        self.end.push(end);
        match self.device_runs.last_mut() {
            Some((d, run_end)) if *d == device => *run_end += 1,
            _ => self.device_runs.push((device, self.start.len())),
        }
    }

    /// Number of stored gaps.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// The device of each gap in `range`.
    pub fn devices(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = i64> + '_ {
        let first = self.device_runs.partition_point(|&(_, end)| end <= range.start);
        let mut run = first;
        range.map(move |i| {
            while self.device_runs[run].1 <= i {
                run += 1;
            }
            self.device_runs[run].0
        })
    }

    /// Store the gaps of the in-order devices too (for callers that emit every gap at once).
    pub fn materialize(&mut self, kernels: &OpsView<'_>) {
        for device in std::mem::take(&mut self.in_order_devices) {
            let mut cursor = InOrderGaps::default();
            cursor.advance(kernels.start, kernels.end, kernels.device, device, usize::MAX, |s, e| {
                self.push(device.into(), s, e)
            });
        }
    }
}

/// The gaps of one device whose non-empty kernels have starts and ends both ascending in index order,
/// found by a resumable pass over the kernels: then a gap lies exactly between a kernel's end and the next
/// kernel's later start, and no sort or buffer is needed.
#[derive(Debug, Clone, Default)]
pub struct InOrderGaps {
    next: usize,
    previous_end: Option<i64>,
}

impl InOrderGaps {
    /// Hand up to `limit` further gaps of `device` to `on_gap`; false once every kernel was passed.
    pub fn advance(
        &mut self,
        start: &[i64],
        end: &[i64],
        devices: Column<'_, i32>,
        device: i32,
        limit: usize,
        mut on_gap: impl FnMut(i64, i64),
    ) -> bool {
        let mut found = 0usize;
        while self.next < start.len() {
            if found >= limit {
                return true;
            }
            let i = self.next;
            self.next += 1;
            let (s, e) = (start[i], end[i]);
            if e <= s || devices.get(i) != device {
                continue;
            }
            if let Some((gap_start, gap_end)) = self.pass(s, e) {
                on_gap(gap_start, gap_end);
                found += 1;
            }
        }
        false
    }

    /// Take the next non-empty kernel `[start, end)` of the device: the gap before it, if there is one.
    #[inline]
    pub fn pass(&mut self, start: i64, end: i64) -> Option<(i64, i64)> {
        let gap = self.previous_end.filter(|&e| start > e).map(|e| (e, start));
        self.previous_end = Some(end);
        gap
    }
}

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
}

/// Indices of `0..n` grouped by `key`, groups in ascending key order, indices ascending in each group.
///
/// Keys are few (devices, streams, kernel names) and rows many, so this buckets in two linear passes
/// (count, then place) instead of sorting an index. Up to [`crate::memory::low_memory_above`] rows the
/// first pass keeps each row's group (4 bytes a row) so that the second looks no key up; above it, no
/// per-row memory is used beyond the groups themselves.
fn group_by<K: Ord + Copy + std::hash::Hash>(n: usize, key: impl Fn(usize) -> K) -> Vec<(K, Vec<u32>)> {
    let mut slots: ahash::AHashMap<K, usize> = ahash::AHashMap::new();
    let mut groups: Vec<(K, Vec<u32>)> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    // Consecutive rows usually share a key (one device, long runs on a stream): skip the hash lookup then.
    let mut last: Option<(K, usize)> = None;
    let mut slot_of = |k: K, slots: &mut ahash::AHashMap<K, usize>, counts: &mut Vec<usize>| -> usize {
        match last {
            Some((lk, s)) if lk == k => s,
            _ => {
                let s = *slots.entry(k).or_insert_with(|| {
                    counts.push(0);
                    counts.len() - 1
                });
                last = Some((k, s));
                s
            }
        }
    };
    let remember = n <= crate::memory::low_memory_above();
    let mut row_slots: Vec<u32> = Vec::with_capacity(if remember { n } else { 0 });
    for i in 0..n {
        let s = slot_of(key(i), &mut slots, &mut counts);
        counts[s] += 1;
        if remember {
            row_slots.push(s as u32);
        }
    }
    let mut keys: Vec<(K, usize)> = slots.iter().map(|(&k, &s)| (k, s)).collect();
    keys.sort_unstable_by_key(|x| x.1);
    groups.extend(keys.iter().map(|&(k, s)| (k, Vec::with_capacity(counts[s]))));
    if remember {
        for (i, &s) in row_slots.iter().enumerate() {
            groups[s as usize].1.push(i as u32);
        }
    } else {
        for i in 0..n {
            let s = slot_of(key(i), &mut slots, &mut counts);
            groups[s].1.push(i as u32);
        }
    }
    groups.sort_unstable_by_key(|g| g.0);
    groups
}

/// Whether `values` never decrease.
fn ascending(values: impl Iterator<Item = i64>) -> bool {
    let mut previous = i64::MIN;
    values.into_iter().all(|v| {
        let ok = v >= previous;
        previous = v;
        ok
    })
}

/// p50, p90 and p99 of the `count` values `values()` yields. Up to [`crate::memory::low_memory_above`]
/// values they are selected on a copy (fastest); beyond, searched where they lie ([`percentiles_of`]), so
/// that a 25M-kernel device does not need a 200 MB copy of its gaps or latencies.
fn percentile_triple<I: Iterator<Item = i64>>(count: usize, values: impl Fn() -> I) -> [Option<f64>; 3] {
    let qs = [0.50, 0.90, 0.99];
    let p = if count <= crate::memory::low_memory_above() {
        let mut copy = Vec::with_capacity(count);
        copy.extend(values());
        percentiles_select(&mut copy, &qs)
    } else {
        percentiles_of(values, &qs)
    };
    [p[0], p[1], p[2]]
}

/// Kernel-side metrics of one group of kernel indices; also returns the sweep for levels. Gaps go to
/// `gaps` under the given device when it is Some (a device's gaps are stored), else they are only counted.
fn kernel_metrics(
    k: &OpsView<'_>,
    members: &[u32],
    row: &mut MetricRow,
    gaps: Option<(&mut Gaps, i64)>,
) -> sweep::Sweep {
    // Buffers are allocated one after another and reused or freed as soon as possible: on a 25M-kernel
    // device each one is hundreds of MB.
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut streams: Vec<i32> = Vec::new();
    for &i in members {
        let (s, e) = (k.start[i as usize], k.end[i as usize]);
        row.kernel_count += 1;
        row.kernel_time_ns += e - s;
        first = first.min(s);
        last = last.max(e);
        let stream = k.stream.get(i as usize);
        if streams.last() != Some(&stream) && !streams.contains(&stream) {
            streams.push(stream);
        }
    }
    row.stream_count = streams.len() as i64;
    if row.kernel_count > 0 {
        row.first_start_ns = Some(first);
        row.last_end_ns = Some(last);
        row.span_ns = Some(last - first);
    }
    let nonempty = || members.iter().map(|&i| i as usize).filter(|&i| k.end[i] > k.start[i]);
    // Kernels that run one after another come with starts and ends both in order: sweep them where they
    // lie, and find their gaps again by a pass instead of storing them (16 bytes a gap). Otherwise sort
    // copies (16 bytes a kernel), freed right after, and store a device's gaps.
    let in_order = ascending(nonempty().map(|i| k.start[i])) && ascending(nonempty().map(|i| k.end[i]));
    let sw = if in_order {
        let sw = sweep::sweep_sorted(nonempty().map(|i| k.start[i]), nonempty().map(|i| k.end[i]), |_, _| {});
        let lengths = || {
            let mut cursor = InOrderGaps::default();
            nonempty().filter_map(move |i| cursor.pass(k.start[i], k.end[i]).map(|(s, e)| e - s))
        };
        gap_metrics(row, lengths);
        if let Some((g, device)) = gaps {
            g.in_order_devices.push(i32::try_from(device).unwrap_or(-1));
        }
        sw
    } else {
        let mut starts: Vec<i64> = nonempty().map(|i| k.start[i]).collect();
        let mut ends: Vec<i64> = nonempty().map(|i| k.end[i]).collect();
        match gaps {
            Some((g, device)) => {
                let first_gap = g.len();
                let sw = sweep::sweep(&mut starts, &mut ends, |s, e| g.push(device, s, e));
                drop((starts, ends));
                // A device's gaps are read back where they are stored, not kept twice.
                let (starts, ends) = (&g.start[first_gap..], &g.end[first_gap..]);
                gap_metrics(row, || starts.iter().zip(ends).map(|(s, e)| e - s));
                sw
            }
            None => {
                let mut counted: Vec<i64> = Vec::new();
                let sw = sweep::sweep(&mut starts, &mut ends, |s, e| counted.push(e - s));
                drop((starts, ends));
                gap_metrics(row, || counted.iter().copied());
                sw
            }
        }
    };
    row.busy_ns = sw.busy_ns;
    row.utilization = row.span_ns.filter(|&s| s > 0).map(|s| sw.busy_ns as f64 / s as f64);
    row.max_concurrency = sw.max_concurrency;
    row.overlap_ns = sw.overlap_ns();
    let latencies = || {
        members.iter().map(|&i| i as usize).filter(|&i| k.api_start[i] != NULL_I64).map(|i| k.start[i] - k.api_start[i])
    };
    let matched = latencies().count();
    row.launch_matched = matched as i64;
    [row.launch_latency_p50_ns, row.launch_latency_p90_ns, row.launch_latency_p99_ns] =
        percentile_triple(matched, latencies);
    sw
}

/// Gap count, total, maximum and percentiles from the gap lengths `lengths()` yields.
fn gap_metrics<I: Iterator<Item = i64>>(row: &mut MetricRow, lengths: impl Fn() -> I) {
    let (count, total, max) = lengths()
        .fold((0usize, 0i64, None), |(n, sum, max), g| (n + 1, sum + g, Some(max.map_or(g, |m: i64| m.max(g)))));
    (row.gap_count, row.gap_total_ns, row.gap_max_ns) = (count as i64, total, max);
    [row.gap_p50_ns, row.gap_p90_ns, row.gap_p99_ns] = percentile_triple(count, lengths);
}

fn add_memops(m: &MemopsView<'_>, members: &[u32], row: &mut MetricRow) {
    for &i in members {
        let i = i as usize;
        let d = m.ops.end[i] - m.ops.start[i];
        let b = if m.bytes[i] == NULL_I64 { 0 } else { m.bytes[i] };
        if m.op[i] == 0 {
            row.memcpy_count += 1;
            row.memcpy_ns += d;
            row.memcpy_bytes += b;
        } else {
            row.memset_count += 1;
            row.memset_ns += d;
            row.memset_bytes += b;
        }
    }
}

/// Compute every derived table of a trace.
pub fn derive(kernels: &KernelsView<'_>, memops: &MemopsView<'_>, ranges: &RangesView<'_>) -> Derived {
    let low_memory = kernels.ops.len() + memops.ops.len() > crate::memory::low_memory_above();
    derive_with(kernels, memops, ranges, !low_memory)
}

/// [`derive`], its parts side by side when `parallel`.
fn derive_with(kernels: &KernelsView<'_>, memops: &MemopsView<'_>, ranges: &RangesView<'_>, parallel: bool) -> Derived {
    let device_part = || device_and_stream_metrics(kernels, memops);
    let summary_part = || summaries(kernels, memops);
    let projection_part = || projection::project(kernels, memops, ranges);
    // The three parts read the same columns and write disjoint tables. Side by side they take about a
    // third less time, but their working buffers (~30 bytes per operation) then add up instead of taking
    // turns: large traces run them one after another so that peak memory stays bounded.
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

/// Device metrics, stream metrics, concurrency levels and gaps.
fn device_and_stream_metrics(kernels: &KernelsView<'_>, memops: &MemopsView<'_>) -> Derived {
    let mut out = Derived::default();
    let k = &kernels.ops;
    let m = &memops.ops;

    // Per device.
    let k_by_dev = group_by(k.len(), |i| k.device.get(i));
    let m_by_dev = group_by(m.len(), |i| m.device.get(i));
    let mut devices: Vec<i32> = k_by_dev.iter().map(|g| g.0).chain(m_by_dev.iter().map(|g| g.0)).collect();
    devices.sort_unstable();
    devices.dedup();
    // Kernel-side metrics of each device: a stream holding all of its device's kernels has the same ones.
    let mut device_kernel_rows: Vec<MetricRow> = Vec::new();
    for dev in devices {
        let mut row = MetricRow { device: dev.into(), ..Default::default() };
        if let Some((_, members)) = k_by_dev.iter().find(|g| g.0 == dev) {
            let sw = kernel_metrics(k, members, &mut row, Some((&mut out.gaps, i64::from(dev))));
            for (level, &t) in sw.level_time.iter().enumerate().skip(1) {
                if t > 0 {
                    out.concurrency_levels.push((dev.into(), level as i64, t));
                }
            }
        }
        device_kernel_rows.push(row.clone());
        if let Some((_, members)) = m_by_dev.iter().find(|g| g.0 == dev) {
            add_memops(memops, members, &mut row);
        }
        out.device_metrics.push(row);
    }
    // Index vectors cost 8 bytes per operation; free each grouping before building the next.
    drop((k_by_dev, m_by_dev));

    // Per (device, stream).
    let k_by_stream = group_by(k.len(), |i| (k.device.get(i), k.stream.get(i)));
    let m_by_stream = group_by(m.len(), |i| (m.device.get(i), m.stream.get(i)));
    let mut streams: Vec<(i32, i32)> = k_by_stream.iter().map(|g| g.0).chain(m_by_stream.iter().map(|g| g.0)).collect();
    streams.sort_unstable();
    streams.dedup();
    for key in streams {
        let mut row = MetricRow { device: key.0.into(), stream: Some(key.1.into()), ..Default::default() };
        if let Ok(pos) = k_by_stream.binary_search_by_key(&key, |g| g.0) {
            let members = &k_by_stream[pos].1;
            let device_row = device_kernel_rows.iter().find(|r| r.device == i64::from(key.0));
            match device_row {
                Some(d) if d.kernel_count == members.len() as i64 => {
                    row = MetricRow { stream: Some(key.1.into()), ..d.clone() };
                }
                _ => {
                    kernel_metrics(k, members, &mut row, None);
                }
            }
        }
        if let Ok(pos) = m_by_stream.binary_search_by_key(&key, |g| g.0) {
            add_memops(memops, &m_by_stream[pos].1, &mut row);
        }
        out.stream_metrics.push(row);
    }
    drop((k_by_stream, m_by_stream));

    out
}

/// Kernel summary per (device, name) and memop summary per (device, op, copy kind); kernel shares unset.
fn summaries(kernels: &KernelsView<'_>, memops: &MemopsView<'_>) -> (Vec<KernelSummaryRow>, Vec<MemopSummaryRow>) {
    // Kernel summary per (device, name).
    let (k, m) = (&kernels.ops, &memops.ops);
    let mut kernel_summary = Vec::new();
    for ((dev, name), members) in group_by(k.len(), |i| (k.device.get(i), kernels.name.get(i))) {
        let mut d: Vec<i64> = members.iter().map(|&i| k.end[i as usize] - k.start[i as usize]).collect();
        let (min_ns, max_ns) = (d.iter().min().copied().unwrap_or(0), d.iter().max().copied().unwrap_or(0));
        let median_ns = percentiles_select(&mut d, &[0.5])[0].unwrap_or(0.0);
        let n = d.len() as i64;
        let total: i64 = d.iter().sum();
        let mean = total as f64 / n as f64;
        let var = if n > 1 { d.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
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
        });
    }

    // Memop summary per (device, op, copy kind).
    let mut memop_summary = Vec::new();
    for ((dev, op, kind), members) in group_by(m.len(), |i| {
        (m.device.get(i), memops.op[i], if memops.op[i] == 0 { memops.copy_kind[i] } else { NULL_I64 })
    }) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Operations from spelled-out columns.
    fn plain_ops<'a>(
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
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: i64) -> i64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % below as u64) as i64
        }
    }

    #[test]
    fn kernels_in_order_are_swept_in_place_with_the_same_results() {
        // Back-to-back kernels with gaps, a zero-length one, and one nested in its predecessor: starts and
        // ends in order only in the forward listing.
        let start = vec![0i64, 10, 10, 25, 40, 41, 60];
        let end = vec![10i64, 20, 10, 30, 50, 45, 70];
        let n = start.len();
        // Kernels 4 and 5 are another device's, so that device 0 holds exactly the forward listing.
        let (device, stream) = (vec![0i32, 0, 0, 0, 1, 1, 0], vec![0i32; n]);
        let api_start: Vec<i64> = start.iter().map(|s| s - 3).collect();
        let (thread, launch) = (vec![NULL_I64; n], vec![NULL_I64; n]);
        let k = plain_ops(&device, &stream, &start, &end, &thread, &api_start, &launch);
        let forward: Vec<u32> = vec![0, 1, 2, 3, 6];
        let backward: Vec<u32> = forward.iter().rev().copied().collect();
        let run = |members: &[u32]| {
            let mut row = MetricRow::default();
            let mut gaps = Gaps::default();
            let sw = kernel_metrics(&k, members, &mut row, Some((&mut gaps, 0)));
            let found_again = gaps.in_order_devices == [0];
            gaps.materialize(&k);
            (row, gaps, sw, found_again)
        };
        let (in_place, gaps, sw, found_again) = run(&forward);
        assert!(found_again, "in-order gaps are found again, not stored");
        let (row, sorted_gaps, sorted_sw, _) = run(&backward);
        assert_eq!((row, sorted_gaps, sorted_sw), (in_place.clone(), gaps.clone(), sw));
        assert_eq!((in_place.busy_ns, in_place.gap_count, in_place.gap_total_ns), (35, 2, 35));
        assert_eq!((gaps.start.clone(), gaps.end.clone()), (vec![20, 30], vec![25, 60]));
        // With the nested kernel the ends are out of order: the copy path, and concurrency 2.
        let nested: Vec<u32> = vec![3, 4, 5, 6];
        let (row, _, _, _) = run(&nested);
        assert_eq!((row.max_concurrency, row.busy_ns, row.overlap_ns), (2, 25, 4));
    }

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
        let kernels = KernelsView { ops, name: (&name).into() };
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

        let side_by_side = derive_with(&kernels, &memops, &ranges, true);
        let in_turn = derive_with(&kernels, &memops, &ranges, false);
        assert_eq!(side_by_side, in_turn);
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
        assert_eq!(derive_with(&indexed_kernels, &indexed_memops, &ranges, true), side_by_side);
        assert_eq!(side_by_side.device_metrics.len(), 3);
        assert!(side_by_side.kernel_summary.iter().all(|r| r.share.is_some_and(|s| s > 0.0 && s <= 1.0)));
        assert!(side_by_side.projection.iter().any(|r| r.gpu_op_count > 0));
    }
}
