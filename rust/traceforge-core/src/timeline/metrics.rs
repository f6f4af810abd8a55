//! Device and stream metrics: busy time, concurrency, overlap, idle gaps and their percentiles, memory
//! operations, and launch latency, per device and per (device, stream).
use super::gaps::{Gaps, InOrderGaps};
use super::grouping::group_by;
use super::percentile::{percentiles_of, percentiles_select};
use super::{sweep, Derived};
use crate::ids::NULL_I64;
use crate::views::{launch_split, KernelsView, MemopsView, OpsView};

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
    /// The launch split of the kernels (`nsys stats --report kernexecsum`, [`crate::views::launch_split`]):
    /// percentiles of the launching API calls' durations, over the kernels whose call (and its end) is known.
    pub launch_api_p50_ns: Option<f64>,
    pub launch_api_p90_ns: Option<f64>,
    pub launch_api_p99_ns: Option<f64>,
    /// Kernels with a queue time (start − API call end >= 0), and its percentiles over them.
    pub launch_queue_count: i64,
    pub launch_queue_p50_ns: Option<f64>,
    pub launch_queue_p90_ns: Option<f64>,
    pub launch_queue_p99_ns: Option<f64>,
    pub stream_count: i64,
    /// Whole-graph executions (graph mode) on the device or stream.
    pub graph_launch_count: i64,
    /// Σ(end − start) of those executions.
    pub graph_ns: i64,
    /// Idle-gap attribution of the device's gaps ([`super::idle::Idle`]; device rows only, set after
    /// [`super::derive`] by [`super::idle::attribute`]).
    pub idle: super::idle::Idle,
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

/// p50, p90 and p99 of the `count` values `values()` yields. Up to `low_memory_above` values they are
/// selected on a copy (fastest); beyond, searched where they lie ([`percentiles_of`]), so that a very
/// large device does not need a copy of its gaps or latencies (8 bytes a value).
fn percentile_triple<I: Iterator<Item = i64>>(
    count: usize,
    values: impl Fn() -> I,
    low_memory_above: usize,
) -> [Option<f64>; 3] {
    let qs = [0.50, 0.90, 0.99];
    let p = if count <= low_memory_above {
        let mut copy = Vec::with_capacity(count);
        copy.extend(values());
        percentiles_select(&mut copy, &qs)
    } else {
        percentiles_of(values, &qs)
    };
    [p[0], p[1], p[2]]
}

/// Timeline metrics of one group of GPU activities: the kernels `members` (indices into `k`) and the
/// whole-graph executions `g_members` (indices into `g`), each activity one interval `[start, end)`;
/// `kernel_count`/`kernel_time_ns` count the kernels only. Also returns the sweep for levels. Gaps go to
/// `gaps` under the given device when it is Some (a device's gaps are stored), else they are only counted.
/// Without graph executions this is exactly the kernels-only computation. `k_api_end` is the end of each
/// kernel's launching call (empty or [`NULL_I64`] where unknown), for the API/queue split of the kernels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kernel_metrics(
    k: &OpsView<'_>,
    k_api_end: &[i64],
    members: &[u32],
    g: &OpsView<'_>,
    g_members: &[u32],
    row: &mut MetricRow,
    gaps: Option<(&mut Gaps, i64)>,
    low_memory_above: usize,
) -> sweep::Sweep {
    // Buffers are allocated one after another and reused or freed as soon as possible: each holds 8 or
    // 16 bytes per kernel of the device, so on a large device they must take turns.
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
    for &i in g_members {
        let (s, e) = (g.start[i as usize], g.end[i as usize]);
        row.graph_launch_count += 1;
        row.graph_ns += e - s;
        first = first.min(s);
        last = last.max(e);
        let stream = g.stream.get(i as usize);
        if !streams.contains(&stream) {
            streams.push(stream);
        }
    }
    row.stream_count = streams.len() as i64;
    if row.kernel_count > 0 || row.graph_launch_count > 0 {
        row.first_start_ns = Some(first);
        row.last_end_ns = Some(last);
        row.span_ns = Some(last - first);
    }
    let nonempty = || members.iter().map(|&i| i as usize).filter(|&i| k.end[i] > k.start[i]);
    let g_nonempty = || g_members.iter().map(|&i| i as usize).filter(|&i| g.end[i] > g.start[i]);
    // Kernels that run one after another come with starts and ends both in order: sweep them where they
    // lie, and find their gaps again by a pass instead of storing them (16 bytes a gap). Otherwise sort
    // copies (16 bytes a kernel), freed right after, and store a device's gaps. Graph executions are merged
    // into the sorted copies (the pass that finds gaps again reads kernels only).
    let in_order =
        g_members.is_empty() && ascending(nonempty().map(|i| k.start[i])) && ascending(nonempty().map(|i| k.end[i]));
    let sw = if in_order {
        let sw = sweep::sweep_sorted(nonempty().map(|i| k.start[i]), nonempty().map(|i| k.end[i]), |_, _| {});
        let lengths = || {
            let mut cursor = InOrderGaps::default();
            nonempty().filter_map(move |i| cursor.pass(k.start[i], k.end[i]).map(|(s, e)| e - s))
        };
        gap_metrics(row, lengths, low_memory_above);
        if let Some((g, device)) = gaps {
            g.in_order_devices.push(i32::try_from(device).unwrap_or(-1));
        }
        sw
    } else {
        let mut starts: Vec<i64> = nonempty().map(|i| k.start[i]).chain(g_nonempty().map(|i| g.start[i])).collect();
        let mut ends: Vec<i64> = nonempty().map(|i| k.end[i]).chain(g_nonempty().map(|i| g.end[i])).collect();
        match gaps {
            Some((g, device)) => {
                let first_gap = g.len();
                let sw = sweep::sweep(&mut starts, &mut ends, |s, e| g.push(device, s, e));
                drop((starts, ends));
                // A device's gaps are read back where they are stored, not kept twice.
                let (starts, ends) = (&g.start[first_gap..], &g.end[first_gap..]);
                gap_metrics(row, || starts.iter().zip(ends).map(|(s, e)| e - s), low_memory_above);
                sw
            }
            None => {
                let mut counted: Vec<i64> = Vec::new();
                let sw = sweep::sweep(&mut starts, &mut ends, |s, e| counted.push(e - s));
                drop((starts, ends));
                gap_metrics(row, || counted.iter().copied(), low_memory_above);
                sw
            }
        }
    };
    row.busy_ns = sw.busy_ns;
    row.utilization = row.span_ns.filter(|&s| s > 0).map(|s| sw.busy_ns as f64 / s as f64);
    row.max_concurrency = sw.max_concurrency;
    row.overlap_ns = sw.overlap_ns();
    let latencies = || {
        let of = |v: &OpsView<'_>, i: usize| (v.api_start[i] != NULL_I64).then(|| v.start[i] - v.api_start[i]);
        let kernels = members.iter().filter_map(move |&i| of(k, i as usize));
        kernels.chain(g_members.iter().filter_map(move |&i| of(g, i as usize)))
    };
    let matched = latencies().count();
    row.launch_matched = matched as i64;
    [row.launch_latency_p50_ns, row.launch_latency_p90_ns, row.launch_latency_p99_ns] =
        percentile_triple(matched, latencies, low_memory_above);
    // The kernels' launch split. Graph executions are left out: like nsys's kernexecsum it is a kernel view.
    let split = |i: u32| {
        let i = i as usize;
        launch_split(k.api_start[i], k_api_end.get(i).copied().unwrap_or(NULL_I64), k.start[i])
    };
    let api_times = || members.iter().filter_map(move |&i| split(i).map(|s| s.0));
    let queue_times = || members.iter().filter_map(move |&i| split(i).and_then(|s| s.1));
    [row.launch_api_p50_ns, row.launch_api_p90_ns, row.launch_api_p99_ns] =
        percentile_triple(api_times().count(), api_times, low_memory_above);
    let queued = queue_times().count();
    row.launch_queue_count = queued as i64;
    [row.launch_queue_p50_ns, row.launch_queue_p90_ns, row.launch_queue_p99_ns] =
        percentile_triple(queued, queue_times, low_memory_above);
    sw
}

/// Gap count, total, maximum and percentiles from the gap lengths `lengths()` yields.
fn gap_metrics<I: Iterator<Item = i64>>(row: &mut MetricRow, lengths: impl Fn() -> I, low_memory_above: usize) {
    let (count, total, max) = lengths()
        .fold((0usize, 0i64, None), |(n, sum, max), g| (n + 1, sum + g, Some(max.map_or(g, |m: i64| m.max(g)))));
    (row.gap_count, row.gap_total_ns, row.gap_max_ns) = (count as i64, total, max);
    [row.gap_p50_ns, row.gap_p90_ns, row.gap_p99_ns] = percentile_triple(count, lengths, low_memory_above);
}

/// Add the memops `members` of `m` to `row`'s memcpy and memset totals.
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

/// Device metrics, stream metrics, concurrency levels and gaps; a device's (and a stream's) activities are
/// its kernels and its whole-graph executions `graphs`.
pub(crate) fn device_and_stream_metrics(
    kernels: &KernelsView<'_>,
    memops: &MemopsView<'_>,
    graphs: &OpsView<'_>,
    low_memory_above: usize,
) -> Derived {
    let mut out = Derived::default();
    let k = &kernels.ops;
    let m = &memops.ops;
    let g = graphs;
    let none: &[u32] = &[];

    // Per device.
    let k_by_dev = group_by(k.len(), |i| k.device.get(i), low_memory_above);
    let m_by_dev = group_by(m.len(), |i| m.device.get(i), low_memory_above);
    let g_by_dev = group_by(g.len(), |i| g.device.get(i), low_memory_above);
    let mut devices: Vec<i32> =
        k_by_dev.iter().map(|x| x.0).chain(m_by_dev.iter().map(|x| x.0)).chain(g_by_dev.iter().map(|x| x.0)).collect();
    devices.sort_unstable();
    devices.dedup();
    // Kernel-side metrics of each device: a stream holding all of its device's activities has the same ones.
    let mut device_kernel_rows: Vec<MetricRow> = Vec::new();
    for dev in devices {
        let mut row = MetricRow { device: dev.into(), ..Default::default() };
        let members = k_by_dev.iter().find(|x| x.0 == dev).map(|x| &x.1[..]);
        let g_members = g_by_dev.iter().find(|x| x.0 == dev).map_or(none, |x| &x.1[..]);
        if members.is_some() || !g_members.is_empty() {
            let gaps = Some((&mut out.gaps, i64::from(dev)));
            let sw = kernel_metrics(
                k,
                kernels.api_end,
                members.unwrap_or(none),
                g,
                g_members,
                &mut row,
                gaps,
                low_memory_above,
            );
            for (level, &t) in sw.level_time.iter().enumerate().skip(1) {
                if t > 0 {
                    out.concurrency_levels.push((dev.into(), level as i64, t));
                }
            }
        }
        device_kernel_rows.push(row.clone());
        if let Some((_, members)) = m_by_dev.iter().find(|x| x.0 == dev) {
            add_memops(memops, members, &mut row);
        }
        out.device_metrics.push(row);
    }
    // Index vectors cost 8 bytes per operation; free each grouping before building the next.
    drop((k_by_dev, m_by_dev, g_by_dev));

    // Per (device, stream).
    let k_by_stream = group_by(k.len(), |i| (k.device.get(i), k.stream.get(i)), low_memory_above);
    let m_by_stream = group_by(m.len(), |i| (m.device.get(i), m.stream.get(i)), low_memory_above);
    let g_by_stream = group_by(g.len(), |i| (g.device.get(i), g.stream.get(i)), low_memory_above);
    let mut streams: Vec<(i32, i32)> = k_by_stream
        .iter()
        .map(|x| x.0)
        .chain(m_by_stream.iter().map(|x| x.0))
        .chain(g_by_stream.iter().map(|x| x.0))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    for key in streams {
        let mut row = MetricRow { device: key.0.into(), stream: Some(key.1.into()), ..Default::default() };
        let members = k_by_stream.binary_search_by_key(&key, |x| x.0).ok().map(|pos| &k_by_stream[pos].1[..]);
        let g_members = g_by_stream.binary_search_by_key(&key, |x| x.0).map_or(none, |pos| &g_by_stream[pos].1[..]);
        if members.is_some() || !g_members.is_empty() {
            let members = members.unwrap_or(none);
            let device_row = device_kernel_rows.iter().find(|r| r.device == i64::from(key.0));
            match device_row {
                Some(d) if d.kernel_count == members.len() as i64 && d.graph_launch_count == g_members.len() as i64 => {
                    row = MetricRow { stream: Some(key.1.into()), ..d.clone() };
                }
                _ => {
                    kernel_metrics(k, kernels.api_end, members, g, g_members, &mut row, None, low_memory_above);
                }
            }
        }
        if let Ok(pos) = m_by_stream.binary_search_by_key(&key, |x| x.0) {
            add_memops(memops, &m_by_stream[pos].1, &mut row);
        }
        out.stream_metrics.push(row);
    }
    drop((k_by_stream, m_by_stream, g_by_stream));

    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::testing::{no_graphs, plain_ops};

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
            let sw = kernel_metrics(&k, &[], members, &no_graphs(), &[], &mut row, Some((&mut gaps, 0)), usize::MAX);
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
    fn graph_executions_are_activities_next_to_kernels() {
        // Kernels on stream 0: [0, 10), [20, 30), [50, 60). Graph executions: [5, 25) on stream 1, bridging
        // the first gap and overlapping both kernels; a zero-length one at 40 on stream 0 (counted, never
        // active, splits nothing); one on device 1 alone.
        let (kd, ks, kst, ke) = (vec![0i32; 3], vec![0i32; 3], vec![0i64, 20, 50], vec![10i64, 30, 60]);
        let k_api = vec![-5i64, NULL_I64, 45];
        let nulls = vec![NULL_I64; 3];
        let k = plain_ops(&kd, &ks, &kst, &ke, &nulls, &k_api, &nulls);
        // Launch calls end at -2 (kernel 0: API 3, queue 2) and 55 (kernel 2 starts before: no queue time).
        let k_api_end = vec![-2i64, NULL_I64, 55];
        let kernels = KernelsView { ops: k, name: (&[0u32, 0, 0][..]).into(), api_end: &k_api_end };
        let (gd, gs, gst, ge) = (vec![0i32, 0, 1], vec![1i32, 0, 4], vec![5i64, 40, 100], vec![25i64, 40, 130]);
        let g_api = vec![1i64, NULL_I64, 90];
        let g = plain_ops(&gd, &gs, &gst, &ge, &nulls, &g_api, &nulls);
        let memops = MemopsView { ops: no_graphs(), op: &[], copy_kind: &[], bytes: &[] };
        let d = device_and_stream_metrics(&kernels, &memops, &g, usize::MAX);
        let dev0 = &d.device_metrics[0];
        assert_eq!((dev0.kernel_count, dev0.kernel_time_ns, dev0.graph_launch_count, dev0.graph_ns), (3, 30, 2, 20));
        assert_eq!((dev0.first_start_ns, dev0.last_end_ns, dev0.span_ns), (Some(0), Some(60), Some(60)));
        // Union [0, 30) + [50, 60); 2 active on [5, 10) and [20, 25); one gap [30, 50).
        assert_eq!((dev0.busy_ns, dev0.max_concurrency, dev0.overlap_ns), (40, 2, 10));
        assert_eq!((dev0.gap_count, dev0.gap_total_ns, dev0.stream_count), (1, 20, 2));
        // Latencies 5 (kernel 0), 5 (kernel 2), 4 (graph 0).
        assert_eq!((dev0.launch_matched, dev0.launch_latency_p50_ns), (3, Some(5.0)));
        // API times 3 and 10 (kernels only); one queue time, 2.
        assert_eq!(dev0.launch_api_p50_ns, Some(6.5));
        assert_eq!((dev0.launch_queue_count, dev0.launch_queue_p50_ns), (1, Some(2.0)));
        assert_eq!(d.concurrency_levels, vec![(0, 1, 30), (0, 2, 10), (1, 1, 30)]);
        assert_eq!(
            (d.gaps.start.clone(), d.gaps.end.clone(), d.gaps.in_order_devices.clone()),
            (vec![30], vec![50], vec![])
        );
        // Device 1 has only a graph execution; stream (0, 1) only graph work; (0, 0) kernels and the empty one.
        let dev1 = &d.device_metrics[1];
        assert_eq!((dev1.kernel_count, dev1.graph_launch_count, dev1.busy_ns, dev1.utilization), (0, 1, 30, Some(1.0)));
        let by_stream: Vec<(i64, Option<i64>, i64, i64, i64)> = d
            .stream_metrics
            .iter()
            .map(|r| (r.device, r.stream, r.kernel_count, r.graph_launch_count, r.busy_ns))
            .collect();
        assert_eq!(by_stream, vec![(0, Some(0), 3, 1, 30), (0, Some(1), 0, 1, 20), (1, Some(4), 0, 1, 30)]);
        // Without graph executions: exactly the kernels-only metrics.
        let plain = device_and_stream_metrics(&kernels, &memops, &no_graphs(), usize::MAX);
        assert_eq!((plain.device_metrics[0].busy_ns, plain.device_metrics[0].graph_launch_count), (30, 0));
        assert_eq!(plain.gaps.in_order_devices, vec![0]);
    }
}
