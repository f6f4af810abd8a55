//! Re-deriving metrics from tables already in the store, without the original export.
//!
//! The stored `kernels`, `memops`, `nvtx_ranges` and `graph_launches` rows (read back as Arrow batches)
//! carry everything the metric code needs, including the launch join, so the same [`timeline::derive`]
//! runs on them. The graph-mode rows of `graph_launches` (those without a `kernel_count`) are the stored
//! whole-graph executions, GPU activities next to the kernels.
use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType};

use crate::columnar::BatchStream;
use crate::error::{Error, Result};
use crate::ids::{launch_key, NULL_I64};
use crate::ingest::tables;
use crate::options::IngestOptions;
use crate::timeline::gpu_metrics::GpuMetrics;
use crate::timeline::idle::{self, StateIntervals};
use crate::timeline::metric_samples::SeriesBuilder;
use crate::timeline::{self, graphs, GraphLaunch, GraphLaunches, NvtxRanges};
use crate::views::{KernelsView, LaunchKeys, MemopsView, OpsView, RangesView, Threads};

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::Invalid(format!("stored table lacks column {name}")))
}

fn ints(b: &RecordBatch, name: &str, out: &mut Vec<i64>) -> Result<()> {
    let c = column(b, name)?;
    match c.data_type() {
        DataType::Int64 => out.extend(c.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(NULL_I64))),
        DataType::Int32 => out.extend(c.as_primitive::<Int32Type>().iter().map(|v| v.map_or(NULL_I64, i64::from))),
        DataType::Null => out.extend(std::iter::repeat_n(NULL_I64, c.len())),
        other => return Err(Error::Invalid(format!("column {name} has type {other}, expected an integer"))),
    }
    Ok(())
}

fn strings(b: &RecordBatch, name: &str, mut f: impl FnMut(Option<&str>)) -> Result<()> {
    let c = column(b, name)?;
    match c.data_type() {
        DataType::Utf8 => c.as_string::<i32>().iter().for_each(&mut f),
        DataType::LargeUtf8 => c.as_string::<i64>().iter().for_each(&mut f),
        DataType::Utf8View => c.as_string_view().iter().for_each(&mut f),
        DataType::Null => (0..c.len()).for_each(|_| f(None)),
        other => return Err(Error::Invalid(format!("column {name} has type {other}, expected text"))),
    }
    Ok(())
}

#[derive(Default)]
struct Ops {
    device: Vec<i64>,
    stream: Vec<i64>,
    start: Vec<i64>,
    end: Vec<i64>,
    pid: Vec<i64>,
    correlation: Vec<i64>,
    launch_tid: Vec<i64>,
    api_start: Vec<i64>,
}

impl Ops {
    fn read(&mut self, b: &RecordBatch) -> Result<()> {
        ints(b, "device_id", &mut self.device)?;
        ints(b, "stream_id", &mut self.stream)?;
        ints(b, "start_ns", &mut self.start)?;
        ints(b, "end_ns", &mut self.end)?;
        ints(b, "pid", &mut self.pid)?;
        ints(b, "correlation_id", &mut self.correlation)?;
        ints(b, "launch_tid", &mut self.launch_tid)?;
        ints(b, "api_start_ns", &mut self.api_start)
    }

    /// (thread key, launch key) of each op; NULL when no API call was matched at ingest.
    fn launch_columns(&self) -> (Vec<i64>, Vec<i64>) {
        (0..self.start.len())
            .map(|i| {
                if self.launch_tid[i] == NULL_I64 || self.pid[i] == NULL_I64 {
                    (NULL_I64, NULL_I64)
                } else {
                    ((self.pid[i] << 24) | self.launch_tid[i], launch_key(self.pid[i], self.correlation[i]))
                }
            })
            .unzip()
    }
}

/// The CUPTI copy kind id of a stored copy kind label.
fn copy_kind_id(label: &str) -> i64 {
    (0..=13).find(|&k| crate::export::events::copy_kind_label(k) == label).unwrap_or(0)
}

type Batches<'a> = &'a mut dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>>;

fn arrow(e: ArrowError) -> Error {
    Error::Invalid(format!("reading stored rows: {e}"))
}

/// The stored `graph_launches` rows.
fn read_graph_launches(batches: Batches<'_>) -> Result<GraphLaunches> {
    let mut g = GraphLaunches::default();
    for b in batches {
        let b = b.map_err(arrow)?;
        ints(&b, "device_id", &mut g.device)?;
        ints(&b, "stream_id", &mut g.stream)?;
        ints(&b, "graph_id", &mut g.graph_id)?;
        ints(&b, "graph_exec_id", &mut g.graph_exec_id)?;
        ints(&b, "start_ns", &mut g.start)?;
        ints(&b, "end_ns", &mut g.end)?;
        ints(&b, "pid", &mut g.pid)?;
        ints(&b, "correlation_id", &mut g.correlation)?;
        ints(&b, "launch_tid", &mut g.launch_tid)?;
        ints(&b, "api_start_ns", &mut g.api_start)?;
        ints(&b, "kernel_count", &mut g.kernel_count)?;
        ints(&b, "kernel_ns", &mut g.kernel_ns)?;
    }
    Ok(g)
}

/// The stored thread states for idle attribution: rows of (`pid`, `tid`, `state`, `start_ns`, `end_ns`),
/// `state` an index into [`idle::STATE_NAMES`] (the CUDA calls, GIL waits and OS calls of the trace).
fn read_states(batches: Batches<'_>) -> Result<StateIntervals> {
    let mut states = StateIntervals::default();
    for b in batches {
        let b = b.map_err(arrow)?;
        let (mut pid, mut tid, mut state, mut start, mut end) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        ints(&b, "pid", &mut pid)?;
        ints(&b, "tid", &mut tid)?;
        ints(&b, "state", &mut state)?;
        ints(&b, "start_ns", &mut start)?;
        ints(&b, "end_ns", &mut end)?;
        for i in 0..pid.len() {
            let Ok(st) = usize::try_from(state[i]) else { continue };
            if pid[i] == NULL_I64 || tid[i] == NULL_I64 || st >= idle::STATE_NAMES.len() {
                continue;
            }
            states.push((pid[i] << 24) | tid[i], st, start[i], end[i]);
        }
    }
    Ok(states)
}

/// The stored GPU metric samples (`device_id`, `metric`, `ts_ns`, `value`), one series per (device, metric).
fn read_gpu_metrics(batches: Batches<'_>) -> Result<GpuMetrics> {
    let (mut names, mut built) = (Vec::new(), SeriesBuilder::default());
    let mut name_ids: HashMap<Option<String>, u32> = HashMap::new();
    let mut series_of: HashMap<(i64, u32), usize> = HashMap::new();
    let (mut device, mut ts, mut value) = (Vec::new(), Vec::new(), Vec::new());
    for b in batches {
        let b = b.map_err(arrow)?;
        device.clear();
        ts.clear();
        value.clear();
        ints(&b, "device_id", &mut device)?;
        ints(&b, "ts_ns", &mut ts)?;
        ints(&b, "value", &mut value)?;
        let mut row = 0usize;
        strings(&b, "metric", |name| {
            let key = name.map(str::to_string);
            let metric = match name_ids.get(&key) {
                Some(&id) => id,
                None => {
                    names.push(key.clone());
                    let id = (names.len() - 1) as u32;
                    name_ids.insert(key, id);
                    id
                }
            };
            let d = device[row];
            // The series of one device share timestamps where they match (sharing group: the device).
            let i = *series_of.entry((d, metric)).or_insert_with(|| built.add(d, metric, d));
            built.push(i, ts[row], value[row]);
            row += 1;
        })?;
    }
    Ok(GpuMetrics::from_builder(names, built))
}

/// Derived tables recomputed from stored rows; names as in [`crate::ingest::Trace::WRITE_ORDER`].
/// `graph_launches` (None: a store without them) gives the graph executions and `graph_summary`;
/// `host_states` ([`read_states`]; None: no thread has a state, so every attributed gap is `other`) the
/// thread states the idle columns are attributed from.
/// `gpu_metrics` (None: none stored) the GPU metric samples behind `gpu_metric_summary` and
/// `nvtx_gpu_metrics`.
pub fn rederive(
    kernels: Batches<'_>,
    memops: Batches<'_>,
    nvtx: Batches<'_>,
    graph_launches: Option<Batches<'_>>,
    host_states: Option<Batches<'_>>,
    gpu_metrics: Option<Batches<'_>>,
    options: &IngestOptions,
) -> Result<Vec<(&'static str, BatchStream)>> {
    let states = match host_states {
        Some(batches) => read_states(batches)?,
        None => StateIntervals::default(),
    };
    let launches = match graph_launches {
        Some(batches) => read_graph_launches(batches)?,
        None => GraphLaunches::default(),
    };
    // The graph-mode executions (no kernel_count): activities of their device and stream.
    let mut g = Ops::default();
    for i in (0..launches.len()).filter(|&i| launches.kernel_count[i] == NULL_I64) {
        let r: GraphLaunch = launches.get(i);
        g.device.push(r.device);
        g.stream.push(r.stream);
        g.start.push(r.start);
        g.end.push(r.end);
        g.pid.push(r.pid);
        g.correlation.push(r.correlation);
        g.launch_tid.push(r.launch_tid);
        g.api_start.push(r.api_start);
    }
    let mut k = Ops::default();
    let mut names: Vec<String> = Vec::new();
    let mut name_index: HashMap<String, u32> = HashMap::new();
    let mut k_name: Vec<u32> = Vec::new();
    let mut k_api_end: Vec<i64> = Vec::new();
    for b in kernels {
        let b = b.map_err(arrow)?;
        k.read(&b)?;
        // Rows from before the launching call's end was kept (or a caller's table without it): unknown.
        if b.column_by_name("api_end_ns").is_some() {
            ints(&b, "api_end_ns", &mut k_api_end)?;
        } else {
            k_api_end.extend(std::iter::repeat_n(NULL_I64, b.num_rows()));
        }
        strings(&b, "name", |n| {
            let n = n.unwrap_or("");
            let id = *name_index.entry(n.to_string()).or_insert_with(|| {
                names.push(n.to_string());
                (names.len() - 1) as u32
            });
            k_name.push(id);
        })?;
    }
    let mut m = Ops::default();
    let mut m_op: Vec<u8> = Vec::new();
    let mut m_kind: Vec<i64> = Vec::new();
    let mut m_bytes: Vec<i64> = Vec::new();
    for b in memops {
        let b = b.map_err(arrow)?;
        m.read(&b)?;
        ints(&b, "bytes", &mut m_bytes)?;
        strings(&b, "op", |o| m_op.push(u8::from(o == Some("memset"))))?;
        strings(&b, "copy_kind", |c| m_kind.push(copy_kind_id(c.unwrap_or(""))))?;
    }
    let mut r = NvtxRanges::default();
    for b in nvtx {
        let b = b.map_err(arrow)?;
        ints(&b, "pid", &mut r.pid)?;
        ints(&b, "tid", &mut r.tid)?;
        ints(&b, "start_ns", &mut r.start)?;
        ints(&b, "end_ns", &mut r.end)?;
        ints(&b, "level", &mut r.level)?;
        strings(&b, "name", |n| r.name.push(n.unwrap_or("").to_string()))?;
        strings(&b, "domain", |d| r.domain.push(d.map(str::to_string)))?;
        strings(&b, "kind", |kind| {
            r.kind.push(match kind {
                Some("push_pop") => "push_pop",
                Some("start_end") => "start_end",
                _ => "mark",
            })
        })?;
    }
    r.thread = r
        .pid
        .iter()
        .zip(&r.tid)
        .map(|(&p, &t)| if p == NULL_I64 || t == NULL_I64 { NULL_I64 } else { (p << 24) | t })
        .collect();

    let (k_thread, k_launch) = k.launch_columns();
    let (m_thread, m_launch) = m.launch_columns();
    let (g_thread, g_launch) = g.launch_columns();
    let narrow = |v: &[i64]| -> Vec<i32> { v.iter().map(|&x| i32::try_from(x).unwrap_or(-1)).collect() };
    let (k_dev, k_stream, m_dev, m_stream) =
        (narrow(&k.device), narrow(&k.stream), narrow(&m.device), narrow(&m.stream));
    let (g_dev, g_stream) = (narrow(&g.device), narrow(&g.stream));
    let gv = OpsView {
        device: (&g_dev).into(),
        stream: (&g_stream).into(),
        start: &g.start,
        end: &g.end,
        thread: Threads::Keys(&g_thread),
        api_start: &g.api_start,
        launch: LaunchKeys::Plain(&g_launch),
    };
    let kv = KernelsView {
        ops: OpsView {
            device: (&k_dev).into(),
            stream: (&k_stream).into(),
            start: &k.start,
            end: &k.end,
            thread: Threads::Keys(&k_thread),
            api_start: &k.api_start,
            launch: LaunchKeys::Plain(&k_launch),
        },
        name: (&k_name).into(),
        api_end: &k_api_end,
    };
    let mv = MemopsView {
        ops: OpsView {
            device: (&m_dev).into(),
            stream: (&m_stream).into(),
            start: &m.start,
            end: &m.end,
            thread: Threads::Keys(&m_thread),
            api_start: &m.api_start,
            launch: LaunchKeys::Plain(&m_launch),
        },
        op: &m_op,
        copy_kind: &m_kind,
        bytes: &m_bytes,
    };
    let (projected, [rt, rs, re]) = r.projectable();
    let ranges = RangesView { thread: &rt, start: &rs, end: &re };
    let mut d = timeline::derive(&kv, &mv, &gv, &ranges, options);
    let samples = match gpu_metrics {
        Some(batches) => read_gpu_metrics(batches)?,
        None => GpuMetrics::default(),
    };
    let devices = timeline::projection::range_devices(&kv, &mv, &gv, &ranges, &samples.devices());
    let gpu = crate::ingest::gpu_metric_tables(&samples, &d.projection, devices);
    drop(samples);
    d.gaps.materialize(&kv.ops);
    d.graph_summary = graphs::graph_summary(&launches);
    let attribution = idle::attribute(&d.gaps, &kv.ops, &gv, states.merged());
    for row in &mut d.device_metrics {
        row.idle = attribution.device(row.device);
    }
    let mut scratch = idle::Scratch::default();
    let gap_idle: Vec<idle::Idle> =
        (0..d.gaps.len()).map(|i| attribution.gap(i, d.gaps.start[i], d.gaps.end[i], &mut scratch)).collect();

    let one = |b: std::result::Result<RecordBatch, ArrowError>| -> Result<BatchStream> {
        Ok(BatchStream::from_batches(b.map_err(arrow)?, Vec::new()))
    };
    Ok(vec![
        ("device_metrics", one(tables::metrics_batch(&d.device_metrics, false))?),
        ("stream_metrics", one(tables::metrics_batch(&d.stream_metrics, true))?),
        ("concurrency_levels", one(tables::levels_batch(&d.concurrency_levels))?),
        ("gap_rows", one(tables::gaps_batch(&d.gaps, 0..d.gaps.len(), &gap_idle))?),
        ("kernel_summary", one(tables::kernel_summary_batch(&d.kernel_summary, |id| names.get(id as usize).cloned()))?),
        ("memop_summary", one(tables::memop_summary_batch(&d.memop_summary))?),
        ("graph_summary", one(tables::graph_summary_batch(&d.graph_summary))?),
        ("nvtx_projection", one(tables::projection_batch(&d.projection, &r, &projected))?),
        ("gpu_metric_summary", one(tables::gpu_metric_summary_batch(&gpu.summary, &gpu.names))?),
        ("nvtx_gpu_metrics", one(tables::nvtx_gpu_metrics_batch(&gpu.by_range, &gpu.names, |i| projected[i] as i64))?),
    ])
}
