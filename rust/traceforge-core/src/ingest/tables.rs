//! The Arrow batch builders of every stored table: one function per table, from the trace's columns
//! (or, for the derived tables, from the timeline's rows, which re-analysis builds too).
//!
//! Column names and types here are the store's schema (`docs/schema.md`); nothing else names them.
use std::sync::Arc;

use arrow_array::{Int32Array, Int8Array, RecordBatch};
use arrow_schema::ArrowError;

use super::classes::{ApiClassKey, Interner, KernelClassIds, KernelClassKey, KERNEL_CLASS_FIELDS};
use super::launch::LaunchState;
use crate::columnar::{batch, dict_col, float_col, int_col, int_col_owned, opt_int_col, str_col};
use crate::export::events::{self, copy_kind_label, ApiChunk, GpuOps, Kernels, SyncEvents, TargetInfo};
use crate::export::os_calls::OsCallBlock;
use crate::export::StringTable;
use crate::ids::{decode_global_id, NULL_I64};
use crate::timeline::gpu_metrics::{MetricSeries, MetricSummaryRow, RangeMetricRow};
use crate::timeline::host::{OsCallSummaryRow, ThreadGilRow};
use crate::timeline::idle::{Idle, IDLE_COLUMNS};
use crate::timeline::nvtx::GilIntervals;
use crate::timeline::projection::ProjectionRow;
use crate::timeline::{Gaps, GraphLaunches, GraphSummaryRow, KernelSummaryRow, MemopSummaryRow, MetricRow, NvtxRanges};

/// What every builder returns.
pub(crate) type BatchResult = std::result::Result<RecordBatch, ArrowError>;

/// The `api` label of an API table id (0 = runtime, 1 = driver).
fn api_label(api: u8) -> &'static str {
    if api == 0 {
        "runtime"
    } else {
        "driver"
    }
}

/// One `api_call_rows` batch: what repeats across calls (name, runtime/driver, pid, tid, return value) is
/// a `call_class` id into `api_call_classes`.
pub(crate) fn api_batch(c: ApiChunk, classes: &mut Interner<ApiClassKey>) -> BatchResult {
    let ids: Vec<i32> = (0..c.len())
        .map(|r| {
            let (pid, tid) = decode_global_id(c.global_tid[r]);
            classes.id((c.name_id[r], c.api, pid, tid, c.return_value[r])) as i32
        })
        .collect();
    // The chunk's columns become the batch's buffers as they are: the rows cross into DuckDB uncopied.
    batch(vec![
        ("correlation_id", int_col_owned(c.correlation)),
        ("start_ns", int_col_owned(c.start)),
        ("end_ns", int_col_owned(c.end)),
        ("call_class", Arc::new(Int32Array::from(ids))),
    ])
}

/// One `kernel_rows` batch: the kernels in `rows`, with their launch matches in `st`.
pub(crate) fn kernels_batch(
    k: &Kernels,
    st: &LaunchState,
    rows: std::ops::Range<usize>,
    classes: &mut KernelClassIds,
) -> BatchResult {
    let class: Vec<i32> = rows.clone().map(|i| classes.id(st, k.shape[i], i) as i32).collect();
    let api_start = int_col(st.api_start[rows.clone()].iter().copied());
    let api_end = int_col(st.api_end[rows.clone()].iter().copied());
    batch(vec![
        ("correlation_id", int_col(rows.clone().map(|i| k.correlation(i)))),
        ("start_ns", int_col(k.start[rows.clone()].iter().copied())),
        ("end_ns", int_col(k.end[rows].iter().copied())),
        ("kernel_class", Arc::new(Int32Array::from(class))),
        ("api_start_ns", api_start),
        ("api_end_ns", api_end),
    ])
}

/// One `memops` batch: the memops in `r`, with their launch matches in `st`.
pub(crate) fn memops_batch(ops: &GpuOps, st: &LaunchState, r: std::ops::Range<usize>) -> BatchResult {
    let m = &ops.memops;
    let nk = ops.kernels.len();
    let launch_tid = int_col((nk + r.start..nk + r.end).map(|op| st.launched_by(op).0).map(|x| {
        if x == NULL_I64 {
            x
        } else {
            x & 0xFF_FFFF
        }
    }));
    let api_start = int_col(st.api_start[nk + r.start..nk + r.end].iter().copied());
    let s = |v: &Vec<i64>| int_col(v[r.clone()].iter().copied());
    batch(vec![
        ("device_id", int_col(m.device[r.clone()].iter().map(|&v| i64::from(v)))),
        ("stream_id", int_col(m.stream[r.clone()].iter().map(|&v| i64::from(v)))),
        ("pid", int_col(m.global_pid[r.clone()].iter().map(|&g| decode_global_id(g).0))),
        ("correlation_id", s(&m.correlation)),
        ("start_ns", s(&m.start)),
        ("end_ns", s(&m.end)),
        ("duration_ns", int_col(r.clone().map(|i| m.end[i] - m.start[i]))),
        ("op", dict_col(r.clone().map(|i| i64::from(m.op[i])), |op| Some(if op == 0 { "memcpy" } else { "memset" }))),
        (
            "copy_kind",
            dict_col(r.clone().map(|i| if m.op[i] == 0 { m.copy_kind[i] } else { -1 }), |k| {
                Some(if k == -1 { "memset" } else { copy_kind_label(k) })
            }),
        ),
        ("bytes", s(&m.bytes)),
        (
            "bandwidth_gbps",
            float_col(r.clone().map(|i| {
                let d = m.end[i] - m.start[i];
                (d > 0 && m.bytes[i] != NULL_I64).then(|| m.bytes[i] as f64 / d as f64)
            })),
        ),
        ("launch_tid", launch_tid),
        ("api_start_ns", api_start),
    ])
}

/// The `devices` batch: the capture's GPUs, and any device an operation ran on that the capture did not
/// describe.
pub(crate) fn devices_batch(target: &TargetInfo, ops: &GpuOps) -> BatchResult {
    let mut gpus = target.gpus.clone();
    let kernels = &ops.kernels;
    let mut seen: Vec<i64> = kernels
        .shape_device
        .iter()
        .chain(&ops.memops.device)
        .chain(&ops.graphs.device)
        .map(|&d| i64::from(d))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    for d in seen {
        if !gpus.iter().any(|g| g.id == d) {
            gpus.push(events::GpuInfo {
                id: d,
                sm_count: NULL_I64,
                total_memory: NULL_I64,
                memory_bandwidth: NULL_I64,
                clock_rate: NULL_I64,
                compute_major: NULL_I64,
                compute_minor: NULL_I64,
                cuda_device: NULL_I64,
                ..Default::default()
            });
        }
    }
    let cc: Vec<Option<String>> = gpus
        .iter()
        .map(|g| (g.compute_major != NULL_I64).then(|| format!("{}.{}", g.compute_major, g.compute_minor.max(0))))
        .collect();
    batch(vec![
        ("device_id", int_col(gpus.iter().map(|g| g.id))),
        ("name", str_col(gpus.iter().map(|g| g.name.as_deref()))),
        ("chip_name", str_col(gpus.iter().map(|g| g.chip_name.as_deref()))),
        ("bus_location", str_col(gpus.iter().map(|g| g.bus_location.as_deref()))),
        ("uuid", str_col(gpus.iter().map(|g| g.uuid.as_deref()))),
        ("sm_count", int_col(gpus.iter().map(|g| g.sm_count))),
        ("total_memory_bytes", int_col(gpus.iter().map(|g| g.total_memory))),
        ("memory_bandwidth_bytes_per_s", int_col(gpus.iter().map(|g| g.memory_bandwidth))),
        ("clock_rate_hz", int_col(gpus.iter().map(|g| g.clock_rate))),
        ("compute_capability", str_col(cc.iter().map(|c| c.as_deref()))),
        ("cuda_device", int_col(gpus.iter().map(|g| g.cuda_device))),
    ])
}

/// The `processes` batch.
pub(crate) fn processes_batch(t: &TargetInfo) -> BatchResult {
    batch(vec![
        ("pid", int_col(t.processes.iter().map(|p| p.0))),
        ("name", str_col(t.processes.iter().map(|p| p.1.as_deref()))),
    ])
}

/// The `threads` batch.
pub(crate) fn threads_batch(t: &TargetInfo) -> BatchResult {
    batch(vec![
        ("pid", int_col(t.threads.iter().map(|p| p.0))),
        ("tid", int_col(t.threads.iter().map(|p| p.1))),
        ("name", str_col(t.threads.iter().map(|p| p.2.as_deref()))),
    ])
}

/// The `sync_events` batch, sync types by their label.
pub(crate) fn sync_batch(s: &SyncEvents, t: &TargetInfo) -> BatchResult {
    let label = |id: i64| -> Option<String> {
        if id == NULL_I64 {
            return None;
        }
        Some(t.sync_type_names.iter().find(|x| x.0 == id).map_or_else(|| id.to_string(), |x| x.1.clone()))
    };
    let labels: Vec<Option<String>> = s.sync_type.iter().map(|&id| label(id)).collect();
    batch(vec![
        ("device_id", int_col(s.device.iter().copied())),
        ("stream_id", int_col(s.stream.iter().copied())),
        ("pid", int_col(s.global_pid.iter().map(|&g| decode_global_id(g).0))),
        ("correlation_id", int_col(s.correlation.iter().copied())),
        ("start_ns", int_col(s.start.iter().copied())),
        ("end_ns", int_col(s.end.iter().copied())),
        ("duration_ns", int_col(s.start.iter().zip(&s.end).map(|(a, b)| b - a))),
        ("sync_type", str_col(labels.iter().map(|l| l.as_deref()))),
    ])
}

/// `concurrency_levels` batch from (device, level, time_ns) rows.
pub(crate) fn levels_batch(rows: &[(i64, i64, i64)]) -> BatchResult {
    batch(vec![
        ("device_id", int_col(rows.iter().map(|x| x.0))),
        ("level", int_col(rows.iter().map(|x| x.1))),
        ("time_ns", int_col(rows.iter().map(|x| x.2))),
    ])
}

/// `gap_rows` batch (the storage behind the `gaps` view) of the gaps in `range`, with their idle
/// attribution `idle` (one per gap of `range`).
pub(crate) fn gaps_batch(gaps: &Gaps, range: std::ops::Range<usize>, idle: &[Idle]) -> BatchResult {
    let mut cols = vec![
        ("device_id", int_col(gaps.devices(range.clone()))),
        ("start_ns", int_col(gaps.start[range.clone()].iter().copied())),
        ("end_ns", int_col(gaps.end[range].iter().copied())),
    ];
    cols.extend(idle_cols(idle));
    batch(cols)
}

/// The six idle columns of `rows` ([`IDLE_COLUMNS`]).
pub(crate) fn idle_cols(rows: &[Idle]) -> Vec<(&'static str, arrow_array::ArrayRef)> {
    IDLE_COLUMNS.iter().enumerate().map(|(c, &name)| (name, int_col(rows.iter().map(|r| r[c])))).collect()
}

/// pid and tid of a thread key (NULL stays NULL).
fn pid_tid(thread: i64) -> (i64, i64) {
    if thread == NULL_I64 {
        (NULL_I64, NULL_I64)
    } else {
        ((thread >> 24) & 0xFF_FFFF, thread & 0xFF_FFFF)
    }
}

/// `gil_rows` batch (the storage behind the `gil_intervals` view) of the GIL ranges in `r`.
pub(crate) fn gil_rows_batch(g: &GilIntervals, r: std::ops::Range<usize>) -> BatchResult {
    let threads = &g.thread[r.clone()];
    batch(vec![
        ("pid", int_col(threads.iter().map(|&t| pid_tid(t).0))),
        ("tid", int_col(threads.iter().map(|&t| pid_tid(t).1))),
        ("state", Arc::new(Int8Array::from_iter_values(g.state[r.clone()].iter().map(|&s| s as i8)))),
        ("start_ns", int_col(g.start[r.clone()].iter().copied())),
        ("end_ns", int_col(g.end[r].iter().copied())),
    ])
}

/// `thread_gil` batch; a thread's name from the capture's thread names (the last one listed wins).
pub(crate) fn thread_gil_batch(rows: &[ThreadGilRow], t: &TargetInfo) -> BatchResult {
    let mut names: std::collections::HashMap<(i64, i64), Option<&str>> = std::collections::HashMap::new();
    for (pid, tid, name) in &t.threads {
        names.insert((*pid, *tid), name.as_deref());
    }
    let keys: Vec<(i64, i64)> = rows.iter().map(|r| pid_tid(r.thread)).collect();
    batch(vec![
        ("pid", int_col(keys.iter().map(|k| k.0))),
        ("tid", int_col(keys.iter().map(|k| k.1))),
        ("name", str_col(keys.iter().map(|k| names.get(k).copied().flatten()))),
        ("gil_hold_ns", int_col(rows.iter().map(|r| r.hold_ns))),
        ("gil_wait_ns", int_col(rows.iter().map(|r| r.wait_ns))),
        ("gil_wait_count", int_col(rows.iter().map(|r| r.wait_count))),
        ("gil_wait_p50_ns", float_col(rows.iter().map(|r| r.wait_p50_ns))),
        ("gil_wait_p99_ns", float_col(rows.iter().map(|r| r.wait_p99_ns))),
        ("gil_wait_max_ns", opt_int_col(rows.iter().map(|r| r.wait_max_ns))),
    ])
}

/// `os_call_rows` batch (the storage behind the `os_calls` view) of one packed block of calls; the name is
/// an id into `os_call_names`.
pub(crate) fn os_call_rows_batch(block: &OsCallBlock) -> BatchResult {
    let calls: Vec<_> = block.iter().collect();
    batch(vec![
        ("pid", int_col(calls.iter().map(|c| pid_tid(c.thread).0))),
        ("tid", int_col(calls.iter().map(|c| pid_tid(c.thread).1))),
        (
            "name_id",
            Arc::new(Int32Array::from_iter_values(calls.iter().map(|c| i32::try_from(c.name_id).unwrap_or(-1)))),
        ),
        ("start_ns", int_col(calls.iter().map(|c| c.start))),
        ("end_ns", int_col(calls.iter().map(|c| c.end))),
    ])
}

/// `os_call_names` batch: each name id of the summary (every id `os_call_rows` uses) and its name.
pub(crate) fn os_call_names_batch(rows: &[OsCallSummaryRow], strings: &StringTable) -> BatchResult {
    let mut ids: Vec<i64> = rows.iter().map(|r| r.name_id).collect();
    ids.sort_unstable();
    batch(vec![
        ("name_id", Arc::new(Int32Array::from_iter_values(ids.iter().map(|&n| i32::try_from(n).unwrap_or(-1))))),
        ("name", str_col(ids.iter().map(|&n| strings.get(n)))),
    ])
}

/// `os_call_summary` batch.
pub(crate) fn os_call_summary_batch(rows: &[OsCallSummaryRow], strings: &StringTable) -> BatchResult {
    batch(vec![
        ("name", str_col(rows.iter().map(|r| strings.get(r.name_id)))),
        ("count", int_col(rows.iter().map(|r| r.count))),
        ("total_ns", int_col(rows.iter().map(|r| r.total_ns))),
        ("avg_ns", float_col(rows.iter().map(|r| Some(r.avg_ns)))),
        ("median_ns", float_col(rows.iter().map(|r| Some(r.median_ns)))),
        ("min_ns", int_col(rows.iter().map(|r| r.min_ns))),
        ("max_ns", int_col(rows.iter().map(|r| r.max_ns))),
    ])
}

/// `nvtx_ranges` batch.
pub(crate) fn nvtx_batch(n: &NvtxRanges) -> BatchResult {
    batch(vec![
        ("range_index", int_col(0..n.start.len() as i64)),
        ("pid", int_col(n.pid.iter().copied())),
        ("tid", int_col(n.tid.iter().copied())),
        ("start_ns", int_col(n.start.iter().copied())),
        ("end_ns", int_col(n.end.iter().copied())),
        (
            "duration_ns",
            int_col(n.start.iter().zip(&n.end).map(|(&s, &e)| if e == NULL_I64 { NULL_I64 } else { e - s })),
        ),
        ("name", str_col(n.name.iter().map(|s| Some(s.as_str())))),
        ("domain", str_col(n.domain.iter().map(|d| d.as_deref()))),
        ("kind", str_col(n.kind.iter().map(|k| Some(*k)))),
        ("level", int_col(n.level.iter().copied())),
    ])
}

/// `device_metrics` / `stream_metrics` batch.
pub(crate) fn metrics_batch(rows: &[MetricRow], per_stream: bool) -> BatchResult {
    let i = |f: fn(&MetricRow) -> i64| int_col(rows.iter().map(f));
    let oi = |f: fn(&MetricRow) -> Option<i64>| opt_int_col(rows.iter().map(f));
    let of = |f: fn(&MetricRow) -> Option<f64>| float_col(rows.iter().map(f));
    let mut cols = vec![("device_id", i(|r| r.device))];
    if per_stream {
        cols.push(("stream_id", oi(|r| r.stream)));
    }
    cols.extend([
        ("kernel_count", i(|r| r.kernel_count)),
        ("kernel_time_ns", i(|r| r.kernel_time_ns)),
        ("span_ns", oi(|r| r.span_ns)),
        ("first_start_ns", oi(|r| r.first_start_ns)),
        ("last_end_ns", oi(|r| r.last_end_ns)),
        ("busy_ns", i(|r| r.busy_ns)),
        ("utilization", of(|r| r.utilization)),
        ("max_concurrency", i(|r| r.max_concurrency)),
        ("overlap_ns", i(|r| r.overlap_ns)),
        ("gap_count", i(|r| r.gap_count)),
        ("gap_total_ns", i(|r| r.gap_total_ns)),
        ("gap_p50_ns", of(|r| r.gap_p50_ns)),
        ("gap_p90_ns", of(|r| r.gap_p90_ns)),
        ("gap_p99_ns", of(|r| r.gap_p99_ns)),
        ("gap_max_ns", oi(|r| r.gap_max_ns)),
        ("memcpy_count", i(|r| r.memcpy_count)),
        ("memcpy_ns", i(|r| r.memcpy_ns)),
        ("memcpy_bytes", i(|r| r.memcpy_bytes)),
        ("memset_count", i(|r| r.memset_count)),
        ("memset_ns", i(|r| r.memset_ns)),
        ("memset_bytes", i(|r| r.memset_bytes)),
        ("launch_latency_p50_ns", of(|r| r.launch_latency_p50_ns)),
        ("launch_latency_p90_ns", of(|r| r.launch_latency_p90_ns)),
        ("launch_latency_p99_ns", of(|r| r.launch_latency_p99_ns)),
        ("launch_matched", i(|r| r.launch_matched)),
        ("stream_count", i(|r| r.stream_count)),
        ("graph_launch_count", i(|r| r.graph_launch_count)),
        ("graph_ns", i(|r| r.graph_ns)),
    ]);
    if !per_stream {
        let idle: Vec<Idle> = rows.iter().map(|r| r.idle).collect();
        cols.extend(idle_cols(&idle));
    }
    // Added after the idle columns (issue 16): the kernels' launch split.
    cols.extend([
        ("launch_api_p50_ns", of(|r| r.launch_api_p50_ns)),
        ("launch_api_p90_ns", of(|r| r.launch_api_p90_ns)),
        ("launch_api_p99_ns", of(|r| r.launch_api_p99_ns)),
        ("launch_queue_count", i(|r| r.launch_queue_count)),
        ("launch_queue_p50_ns", of(|r| r.launch_queue_p50_ns)),
        ("launch_queue_p90_ns", of(|r| r.launch_queue_p90_ns)),
        ("launch_queue_p99_ns", of(|r| r.launch_queue_p99_ns)),
    ]);
    batch(cols)
}

/// `kernel_summary` batch; `name_of` resolves interned names.
pub(crate) fn kernel_summary_batch(rows: &[KernelSummaryRow], name_of: impl Fn(u32) -> Option<String>) -> BatchResult {
    let names: Vec<Option<String>> = rows.iter().map(|r| name_of(r.name)).collect();
    batch(vec![
        ("device_id", int_col(rows.iter().map(|r| r.device))),
        ("name", str_col(names.iter().map(|n| n.as_deref()))),
        ("count", int_col(rows.iter().map(|r| r.count))),
        ("total_ns", int_col(rows.iter().map(|r| r.total_ns))),
        ("avg_ns", float_col(rows.iter().map(|r| Some(r.avg_ns)))),
        ("median_ns", float_col(rows.iter().map(|r| Some(r.median_ns)))),
        ("min_ns", int_col(rows.iter().map(|r| r.min_ns))),
        ("max_ns", int_col(rows.iter().map(|r| r.max_ns))),
        ("stddev_ns", float_col(rows.iter().map(|r| Some(r.stddev_ns)))),
        ("share", float_col(rows.iter().map(|r| r.share))),
        ("launched_count", int_col(rows.iter().map(|r| r.launched_count))),
        ("api_avg_ns", float_col(rows.iter().map(|r| r.api_avg_ns))),
        ("api_median_ns", float_col(rows.iter().map(|r| r.api_median_ns))),
        ("queue_count", int_col(rows.iter().map(|r| r.queue_count))),
        ("queue_avg_ns", float_col(rows.iter().map(|r| r.queue_avg_ns))),
        ("queue_median_ns", float_col(rows.iter().map(|r| r.queue_median_ns))),
    ])
}

/// `memop_summary` batch.
pub(crate) fn memop_summary_batch(rows: &[MemopSummaryRow]) -> BatchResult {
    batch(vec![
        ("device_id", int_col(rows.iter().map(|r| r.device))),
        ("op", str_col(rows.iter().map(|r| Some(if r.op == 0 { "memcpy" } else { "memset" })))),
        (
            "copy_kind",
            str_col(rows.iter().map(|r| Some(if r.op == 0 { copy_kind_label(r.copy_kind) } else { "memset" }))),
        ),
        ("count", int_col(rows.iter().map(|r| r.count))),
        ("total_ns", int_col(rows.iter().map(|r| r.total_ns))),
        ("total_bytes", int_col(rows.iter().map(|r| r.total_bytes))),
        ("avg_ns", float_col(rows.iter().map(|r| Some(r.avg_ns)))),
        ("min_ns", int_col(rows.iter().map(|r| r.min_ns))),
        ("max_ns", int_col(rows.iter().map(|r| r.max_ns))),
        ("bandwidth_gbps", float_col(rows.iter().map(|r| r.bandwidth_gbps))),
    ])
}

/// `nvtx_projection` batch: `projected[i]` is the nvtx row of projection row i.
pub(crate) fn projection_batch(rows: &[ProjectionRow], n: &NvtxRanges, projected: &[usize]) -> BatchResult {
    let at = |r: &ProjectionRow| projected[r.range];
    batch(vec![
        ("range_index", int_col(rows.iter().map(|r| at(r) as i64))),
        ("name", str_col(rows.iter().map(|r| Some(n.name[at(r)].as_str())))),
        ("domain", str_col(rows.iter().map(|r| n.domain[at(r)].as_deref()))),
        ("pid", int_col(rows.iter().map(|r| n.pid[at(r)]))),
        ("tid", int_col(rows.iter().map(|r| n.tid[at(r)]))),
        ("start_ns", int_col(rows.iter().map(|r| n.start[at(r)]))),
        ("end_ns", int_col(rows.iter().map(|r| n.end[at(r)]))),
        ("level", int_col(rows.iter().map(|r| n.level[at(r)]))),
        ("gpu_start_ns", opt_int_col(rows.iter().map(|r| r.gpu_start_ns))),
        ("gpu_end_ns", opt_int_col(rows.iter().map(|r| r.gpu_end_ns))),
        ("gpu_op_count", int_col(rows.iter().map(|r| r.gpu_op_count))),
        ("launch_count", int_col(rows.iter().map(|r| r.launch_count))),
        ("kernel_count", int_col(rows.iter().map(|r| r.kernel_count))),
        ("kernel_time_ns", int_col(rows.iter().map(|r| r.kernel_time_ns))),
        ("graph_ns", int_col(rows.iter().map(|r| r.graph_ns))),
    ])
}

/// A device id column as INTEGER (what the store declares; nsys device ids are small).
fn device_col(devices: &[i64]) -> arrow_array::ArrayRef {
    Arc::new(Int32Array::from_iter(devices.iter().map(|&d| i32::try_from(d).ok())))
}

/// `graph_launches` batch: one row per graph execution (either capture mode).
pub(crate) fn graph_launches_batch(g: &GraphLaunches) -> BatchResult {
    let c = |v: &Vec<i64>| int_col(v.iter().copied());
    let latency = g.start.iter().zip(&g.api_start).map(|(&s, &a)| if a == NULL_I64 { NULL_I64 } else { s - a });
    batch(vec![
        ("device_id", device_col(&g.device)),
        ("stream_id", c(&g.stream)),
        ("graph_id", c(&g.graph_id)),
        ("graph_exec_id", c(&g.graph_exec_id)),
        ("start_ns", c(&g.start)),
        ("end_ns", c(&g.end)),
        ("duration_ns", int_col(g.start.iter().zip(&g.end).map(|(s, e)| e - s))),
        ("pid", c(&g.pid)),
        ("correlation_id", c(&g.correlation)),
        ("launch_tid", c(&g.launch_tid)),
        ("api_start_ns", c(&g.api_start)),
        ("launch_latency_ns", int_col(latency)),
        ("kernel_count", c(&g.kernel_count)),
        ("kernel_ns", c(&g.kernel_ns)),
    ])
}

/// `graph_summary` batch.
pub(crate) fn graph_summary_batch(rows: &[GraphSummaryRow]) -> BatchResult {
    let devices: Vec<i64> = rows.iter().map(|r| r.device).collect();
    batch(vec![
        ("device_id", device_col(&devices)),
        ("graph_id", int_col(rows.iter().map(|r| r.graph_id))),
        ("count", int_col(rows.iter().map(|r| r.count))),
        ("total_ns", int_col(rows.iter().map(|r| r.total_ns))),
        ("avg_ns", float_col(rows.iter().map(|r| Some(r.avg_ns)))),
        ("median_ns", float_col(rows.iter().map(|r| Some(r.median_ns)))),
        ("min_ns", int_col(rows.iter().map(|r| r.min_ns))),
        ("max_ns", int_col(rows.iter().map(|r| r.max_ns))),
    ])
}

/// The `kernel_classes` batch: one row per `kernel_class` id of `kernel_rows`; `shapes` are the kernels'.
pub(crate) fn kernel_classes_batch(
    classes: &[KernelClassKey],
    shapes: &[events::KernelShape],
    strings: &StringTable,
) -> BatchResult {
    let field = |k: &KernelClassKey, i: usize| match i {
        16 => k.1,
        17 => k.2,
        _ => shapes[k.0 as usize][i],
    };
    let mut columns = vec![("kernel_class", int_col(0..classes.len() as i64))];
    for (i, &(name, interned)) in KERNEL_CLASS_FIELDS.iter().enumerate() {
        let column = if interned {
            str_col(classes.iter().map(|k| strings.get(field(k, i))))
        } else {
            int_col(classes.iter().map(|k| field(k, i)))
        };
        columns.push((name, column));
    }
    batch(columns)
}

/// The `api_call_classes` batch: one row per `call_class` id of `api_call_rows`.
pub(crate) fn api_classes_batch(classes: &[ApiClassKey], strings: &StringTable) -> BatchResult {
    batch(vec![
        ("call_class", int_col(0..classes.len() as i64)),
        ("pid", int_col(classes.iter().map(|c| c.2))),
        ("tid", int_col(classes.iter().map(|c| c.3))),
        ("name", str_col(classes.iter().map(|c| strings.get(c.0)))),
        ("api", str_col(classes.iter().map(|c| Some(api_label(c.1))))),
        ("return_value", int_col(classes.iter().map(|c| c.4))),
    ])
}

/// One `gpu_metric_rows` batch: the samples `rows` of one series (device and metric id repeat; DuckDB
/// stores such runs in a few bytes).
pub(crate) fn gpu_metric_rows_batch(s: &MetricSeries, rows: std::ops::Range<usize>) -> BatchResult {
    let n = rows.len();
    let device = i32::try_from(s.device).ok();
    batch(vec![
        ("device_id", Arc::new(Int32Array::from(vec![device; n])) as arrow_array::ArrayRef),
        ("metric_class", Arc::new(Int32Array::from(vec![s.metric as i32; n]))),
        ("ts_ns", int_col(s.ts[rows.clone()].iter().copied())),
        ("value", int_col(s.value.slice(rows))),
    ])
}

/// `gpu_metric_classes` batch: each metric name of the trace once, by `metric_class` id.
pub(crate) fn gpu_metric_classes_batch(names: &[Option<String>]) -> BatchResult {
    batch(vec![
        ("metric_class", Arc::new(Int32Array::from_iter_values(0..names.len() as i32)) as arrow_array::ArrayRef),
        ("metric", str_col(names.iter().map(|n| n.as_deref()))),
    ])
}

/// `gpu_metric_summary` batch.
pub(crate) fn gpu_metric_summary_batch(rows: &[MetricSummaryRow], names: &[Option<String>]) -> BatchResult {
    let name = |m: u32| names.get(m as usize).and_then(|n| n.as_deref());
    batch(vec![
        ("device_id", device_col(&rows.iter().map(|r| r.device).collect::<Vec<_>>())),
        ("metric", str_col(rows.iter().map(|r| name(r.metric)))),
        ("sample_count", int_col(rows.iter().map(|r| r.sample_count))),
        ("mean", float_col(rows.iter().map(|r| r.mean))),
        ("min", opt_int_col(rows.iter().map(|r| r.min))),
        ("max", opt_int_col(rows.iter().map(|r| r.max))),
        ("p50", float_col(rows.iter().map(|r| r.p50))),
        ("p90", float_col(rows.iter().map(|r| r.p90))),
        ("p99", float_col(rows.iter().map(|r| r.p99))),
    ])
}

/// `nvtx_gpu_metrics` batch: `range_index[r]` is the stored `range_index` of window range `r`.
pub(crate) fn nvtx_gpu_metrics_batch(
    rows: &[RangeMetricRow],
    names: &[Option<String>],
    range_index: impl Fn(usize) -> i64,
) -> BatchResult {
    let name = |m: u32| names.get(m as usize).and_then(|n| n.as_deref());
    batch(vec![
        ("range", int_col(rows.iter().map(|r| range_index(r.range)))),
        ("metric", str_col(rows.iter().map(|r| name(r.metric)))),
        ("mean", float_col(rows.iter().map(|r| r.mean))),
        ("samples", int_col(rows.iter().map(|r| r.samples))),
    ])
}
