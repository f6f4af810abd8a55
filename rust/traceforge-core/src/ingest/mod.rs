//! One trace from export to tables: read, match launches, derive metrics, emit Arrow streams.
//!
//! The order matters and is enforced here: GPU operations are read first (they are what the metrics
//! need), then the CUDA API tables stream through (they are the largest tables and are never held in
//! memory: each chunk is matched against the GPU operations and handed on), then [`Trace::finish`]
//! derives every metric, then the remaining tables are emitted. [`Trace::tables`] walks that order: it
//! yields every stored table, in the order it must be written, as a `(name, stream)` pair.
//!
//! The parts: [`launch`] matches API calls to GPU operations, [`classes`] interns the values that
//! repeat (kernel and API call classes), [`tables`] builds each table's Arrow batches, and
//! [`api_reader`] reads the API tables in the background from the moment the trace is opened.
mod api_reader;
mod classes;
mod launch;
mod nvtx_reader;
pub(crate) mod tables;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

use self::api_reader::{read_api_tables, ApiChunks};
use self::classes::{Dictionaries, Interner, KernelClassIds};
use self::launch::LaunchState;
use self::tables::{
    api_batch, api_classes_batch, devices_batch, gaps_batch, gil_rows_batch, gpu_metric_classes_batch,
    gpu_metric_rows_batch, gpu_metric_summary_batch, graph_launches_batch, graph_summary_batch, kernel_classes_batch,
    kernel_summary_batch, kernels_batch, levels_batch, memop_summary_batch, memops_batch, metrics_batch, nvtx_batch,
    nvtx_gpu_metrics_batch, os_call_names_batch, os_call_rows_batch, os_call_summary_batch, processes_batch,
    projection_batch, sync_batch, thread_gil_batch, threads_batch, BatchResult,
};
use crate::columnar::{batch, int_col, BatchStream, BATCH_ROWS};
use crate::error::{Error, Result};
use crate::export::events::{self, ApiChunk, GpuOps, GraphInfo, NvtxEvents, SyncEvents, TargetInfo};
use crate::export::gpu_metrics::read_gpu_metrics;
use crate::export::os_calls::{read_os_calls, OsCallBlock, OsCalls};
use crate::export::probe::{DRIVER_TABLE, GPU_METRICS_TABLE, RUNTIME_TABLE};
use crate::export::scan::ScanReader;
use crate::export::{Capabilities, ExportFile, StringTable};
use crate::options::IngestOptions;
use crate::timeline::gpu_metrics::{self, GpuMetrics, MetricSummaryRow, RangeMetricRow, RangeWindow};
use crate::timeline::graphs::{graph_summary, GraphLaunch, GraphLaunches, NodeKernel};
use crate::timeline::host::{OsCallSummaryRow, ThreadGilRow};
use crate::timeline::idle::{self, IdleAttribution, StateIntervals};
use crate::timeline::nvtx::{build_nvtx_ranges, gil_domains, gil_intervals, GilIntervals, NvtxRanges};
use crate::timeline::{self, Derived};
use crate::views::{KernelsView, LaunchKeys, MemopsView, OpsView, RangesView, Threads};

/// Results of [`Trace::finish`].
pub struct Finished {
    /// Every derived table but the NVTX ranges.
    pub derived: Derived,
    /// The trace's NVTX ranges and marks.
    pub nvtx: NvtxRanges,
    /// Index into `nvtx` of each projected range (the rows of `derived.projection`).
    pub projected: Vec<usize>,
    /// One row per graph execution, in either capture mode, ordered by (device, start, stream, pid).
    pub graph_launches: GraphLaunches,
    pub thread_gil: Vec<ThreadGilRow>,
    pub os_call_summary: Vec<OsCallSummaryRow>,
    /// The idle-gap attribution of every gap (device totals are in `derived.device_metrics`).
    pub idle: IdleAttribution,
    /// The GPU metric tables but the samples themselves (empty without `GPU_METRICS`).
    pub gpu_metrics: GpuMetricTables,
}

/// The derived GPU metric tables of a trace, and the metric names their rows refer to.
#[derive(Debug, Clone, Default)]
pub struct GpuMetricTables {
    /// Metric names by `metric_class` id.
    pub names: Vec<Option<String>>,
    pub summary: Vec<MetricSummaryRow>,
    /// Per (range, metric); `range` indexes `Finished::projected`.
    pub by_range: Vec<RangeMetricRow>,
}

/// Counts for the `traces` row.
#[derive(Debug, Clone, Default)]
pub struct TraceCounts {
    pub kernels: u64,
    pub memops: u64,
    /// API rows streamed so far (all of them once `api_call_rows` was read).
    pub api_calls: u64,
    /// NVTX ranges and marks (0 until the metrics were derived).
    pub nvtx: u64,
    /// Whole-graph executions (`CUPTI_ACTIVITY_KIND_GRAPH_TRACE` rows, graph mode).
    pub graph_execs: u64,
}

/// One export being ingested.
pub struct Trace {
    /// The export being read.
    pub file: ExportFile,
    /// What the export holds (tables, columns, schema version).
    pub caps: Capabilities,
    /// The capture's GPUs, processes, threads and clocks.
    pub target: TargetInfo,
    pub(crate) strings: StringTable,
    pub(crate) ops: GpuOps,
    /// Graph node clones and the recorded CUDA graph trace mode.
    pub(crate) graph_info: GraphInfo,
    /// The NVTX events but the GIL ranges (read out at open into `gil`).
    pub(crate) nvtx_events: NvtxEvents,
    /// The GIL ranges (`gil_intervals`), out of the user's NVTX ranges; shared with the `gil_rows` stream,
    /// which needs no derived metric.
    gil: Arc<GilIntervals>,
    pub(crate) sync: SyncEvents,
    /// OS runtime calls (`OSRT_API`, real calls only).
    pub(crate) os_calls: OsCalls,
    /// Each thread's CUDA call intervals (sync / other), collected as the API tables stream.
    api_states: Mutex<Option<StateIntervals>>,
    cancel: Arc<AtomicBool>,
    /// The options it was opened with, `threads` resolved (never 0).
    options: IngestOptions,
    launches: Mutex<LaunchState>,
    /// The API tables' chunks, being read since the trace was opened, until `api_stream` takes them.
    api_chunks: Mutex<Option<ApiChunks>>,
    dictionaries: Mutex<Dictionaries>,
    /// Gaps from [`Trace::finish`] until `gap_rows` is emitted.
    gaps: Mutex<Option<timeline::Gaps>>,
    /// GPU metric samples from [`Trace::finish`] until `gpu_metric_rows` is emitted.
    gpu_samples: Mutex<Option<GpuMetrics>>,
    api_rows: std::sync::atomic::AtomicU64,
    finished: OnceLock<Finished>,
    /// Held while [`Trace::finish`] derives, so that the background derivation and a caller asking for a
    /// derived table meanwhile compute it once (the caller waits).
    finishing: Mutex<()>,
}

impl Trace {
    /// Every table an ingest stores, in the order it must be written: `api_call_rows` first (streaming
    /// it matches the launches), then the tables that need no derived metric ([`Trace::NEEDS_NO_METRICS`]:
    /// they are written while [`Trace::finish`] runs in the background), then the tables `finish` makes
    /// possible, each dictionary (`kernel_classes`, `api_call_classes`) after the stream that builds it.
    pub const WRITE_ORDER: [&'static str; 28] = [
        "api_call_rows",
        "devices",
        "processes",
        "threads",
        "sync_events",
        "gil_rows",
        "os_call_rows",
        "gap_rows",
        "kernel_rows",
        "kernel_classes",
        "api_call_classes",
        "memops",
        "graph_launches",
        "nvtx_ranges",
        "device_metrics",
        "stream_metrics",
        "concurrency_levels",
        "kernel_summary",
        "memop_summary",
        "graph_summary",
        "nvtx_projection",
        "thread_gil",
        "os_call_names",
        "os_call_summary",
        "gpu_metric_rows",
        "gpu_metric_classes",
        "gpu_metric_summary",
        "nvtx_gpu_metrics",
    ];

    /// The tables streamed from what the export holds, without waiting for the derived metrics.
    pub const NEEDS_NO_METRICS: [&'static str; 6] =
        ["devices", "processes", "threads", "sync_events", "gil_rows", "os_call_rows"];

    /// The tables written after `api_call_rows`, in write order (the binding's `table_names`).
    pub fn tables_after_api_calls() -> &'static [&'static str] {
        &Self::WRITE_ORDER[1..]
    }

    /// Open and read everything but the API tables, which start streaming in the background.
    pub fn open(path: &Path, options: &IngestOptions, cancel: Arc<AtomicBool>) -> Result<Arc<Trace>> {
        let options = options.with_threads(options.reader_threads());
        let file = ExportFile::open(path)?;
        let conn = file.connect()?;
        let caps = Capabilities::probe(&file, &conn)?;
        let strings = StringTable::load(&file, &conn, caps.has_table("StringIds"))?;
        let target = events::read_target_info(&file, &caps, &conn, &strings)?;
        let mut ops = events::read_gpu_ops(&file, &caps, &options, &cancel)?;
        let graph_info;
        (ops.graphs, graph_info) = events::read_graphs(&file, &caps, &conn)?;
        let (nvtx_events, gil) = nvtx_reader::read_split(&file, &caps, &options, &cancel, &strings)?;
        let sync = events::read_sync(&file, &caps, &options, &cancel)?;
        let os_calls = read_os_calls(&file, &caps, &options, &cancel)?;
        // Validate the API tables' columns now, before anything streams.
        for table in [RUNTIME_TABLE, DRIVER_TABLE] {
            events::api_exprs(&file, &caps, table)?;
        }
        // The API tables start streaming now, so that their first chunks are read while launches are
        // indexed and the caller gets its store ready; a few chunks wait, bounded, until it streams them.
        let api_chunks =
            Mutex::new(Some(read_api_tables(&file, &caps, options.threads, ScanReader::chosen(&options), &cancel)));
        let launches = Mutex::new(LaunchState::new(&ops));
        Ok(Arc::new(Trace {
            file,
            caps,
            strings,
            target,
            ops,
            graph_info,
            nvtx_events,
            gil: Arc::new(gil),
            sync,
            os_calls,
            api_states: Default::default(),
            cancel,
            options,
            launches,
            api_chunks,
            dictionaries: Default::default(),
            gaps: Default::default(),
            gpu_samples: Default::default(),
            api_rows: Default::default(),
            finished: OnceLock::new(),
            finishing: Mutex::new(()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaunchState> {
        self.launches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dicts(&self) -> std::sync::MutexGuard<'_, Dictionaries> {
        self.dictionaries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stream the runtime then driver API tables as `api_call_rows` batches, matching launches on the way.
    fn api_stream(self: &Arc<Self>) -> Result<BatchStream> {
        if self.lock().done {
            return Err(Error::Invalid("api_calls were already streamed".into()));
        }
        let schema = api_batch(ApiChunk::default(), &mut Interner::new()).map_err(arrow_err)?.schema();
        let early = self.api_chunks.lock().unwrap_or_else(|p| p.into_inner()).take();
        let rx = early.unwrap_or_else(|| {
            let reader = ScanReader::chosen(&self.options);
            read_api_tables(&self.file, &self.caps, self.options.threads, reader, &self.cancel)
        });
        let trace = Arc::clone(self);
        let mut failed = false;
        let mut names = Interner::new();
        // Each thread's CUDA call intervals, for idle attribution; whether a name id is a synchronizing
        // call is looked up once per id (0 unknown, 1 no, 2 yes).
        let mut states = StateIntervals::default();
        let mut is_sync: Vec<u8> = Vec::new();
        let iter = std::iter::from_fn(move || {
            if failed {
                return None;
            }
            match rx.recv() {
                Ok(Ok((api, cols))) => {
                    let chunk = ApiChunk::from_columns(api, cols);
                    trace.lock().absorb(&trace.ops, &chunk);
                    collect_api_states(&chunk, &trace.strings, &mut is_sync, &mut states);
                    trace.api_rows.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Some(api_batch(chunk, &mut names))
                }
                Ok(Err(e)) => {
                    failed = true;
                    Some(Err(ArrowError::ExternalError(Box::new(e))))
                }
                Err(_) => {
                    if trace.cancel.load(Ordering::Relaxed) {
                        failed = true;
                        return Some(Err(ArrowError::ExternalError(Box::new(Error::Interrupted))));
                    }
                    let mut state = trace.lock();
                    state.done = true;
                    state.order = Vec::new(); // only needed while API rows stream
                    drop(state);
                    crate::memory::release_free_memory(); // the API chunks' columns
                    trace.dicts().api_classes = Some(std::mem::take(&mut names.values));
                    *trace.api_states.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::mem::take(&mut states));
                    trace.finish_in_background();
                    None
                }
            }
        });
        Ok(BatchStream::new(schema, Box::new(iter)))
    }

    /// Start deriving the metrics on a thread of their own, once the API calls are all streamed: the
    /// caller meanwhile writes the tables of [`Trace::NEEDS_NO_METRICS`] (DuckDB's insert of 3.4M GIL
    /// ranges or 5M OS calls is ~0.15-0.3 s of mostly one core), and its first derived table waits for the
    /// derivation instead of starting it. A derivation that fails is run again, in the caller, by that
    /// first derived table, which then reports the error.
    fn finish_in_background(self: &Arc<Self>) {
        let trace = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("traceforge-finish".into()).spawn(move || {
            // A panic stays on this thread (the caller's own `finish` meets it again and reports it).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trace.finish().map(|_| ())));
        });
        // Without a thread the caller derives in its turn, as before.
        drop(spawned);
    }

    /// Match launches without emitting api_call_rows (when the caller does not store them).
    fn match_launches_only(self: &Arc<Self>) -> Result<()> {
        if self.lock().done {
            return Ok(());
        }
        for item in self.api_stream()? {
            item.map_err(|e| match e {
                ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
                    Ok(err) => *err,
                    Err(other) => Error::Invalid(other.to_string()),
                },
                other => Error::Invalid(other.to_string()),
            })?;
        }
        Ok(())
    }

    /// Derive every metric (after the API tables were streamed or matched).
    pub fn finish(self: &Arc<Self>) -> Result<&Finished> {
        if let Some(f) = self.finished.get() {
            return Ok(f);
        }
        let _one_at_a_time = self.finishing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = self.finished.get() {
            return Ok(f); // derived by the background thread meanwhile
        }
        self.match_launches_only()?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let state = self.lock();
        let k = &self.ops.kernels;
        let m = &self.ops.memops;
        let g = &self.ops.graphs;
        let (nk, nm) = (k.len(), m.len());
        let launcher_threads = state.launcher_threads();
        let kernels = KernelsView {
            ops: OpsView {
                device: k.device(),
                stream: k.stream(),
                start: &k.start,
                end: &k.end,
                thread: Threads::Indexed { ids: &state.launcher[..nk], keys: &launcher_threads },
                api_start: &state.api_start[..nk],
                launch: k.launch_keys(),
            },
            name: k.name(),
            api_end: &state.api_end[..nk],
        };
        let memops = MemopsView {
            ops: OpsView {
                device: (&m.device).into(),
                stream: (&m.stream).into(),
                start: &m.start,
                end: &m.end,
                thread: Threads::Indexed { ids: &state.launcher[nk..nk + nm], keys: &launcher_threads },
                api_start: &state.api_start[nk..nk + nm],
                launch: LaunchKeys::Plain(&m.launch),
            },
            op: &m.op,
            copy_kind: &m.copy_kind,
            bytes: &m.bytes,
        };
        let graphs = OpsView {
            device: (&g.device).into(),
            stream: (&g.stream).into(),
            start: &g.start,
            end: &g.end,
            thread: Threads::Indexed { ids: &state.launcher[nk + nm..], keys: &launcher_threads },
            api_start: &state.api_start[nk + nm..],
            launch: LaunchKeys::Plain(&g.launch),
        };
        let text_of = |id| self.strings.get(id);
        let nvtx = build_nvtx_ranges(&nvtx_reader::columns(&self.nvtx_events), text_of);
        let (projected, [r_thread, r_start, r_end]) = nvtx.projectable();
        let ranges = RangesView { thread: &r_thread, start: &r_start, end: &r_end };
        let mut derived = timeline::derive(&kernels, &memops, &graphs, &ranges, &self.options);
        let graph_launches = self.graph_launches(&state);
        derived.graph_summary = graph_summary(&graph_launches);
        // Two independent halves, side by side (on a 2-core machine the host half alone left a core idle
        // for ~0.7 s of a GPU-metric capture): the host-side evidence (GIL ranges, OS calls, what the
        // launching thread did during each gap) and the GPU metric samples, read by their own workers.
        let gil = &*self.gil;
        let api_states = self.api_states.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        let has_metrics = self.caps.has_table(GPU_METRICS_TABLE);
        let (host, gpu) = std::thread::scope(|s| {
            let reader =
                has_metrics.then(|| s.spawn(|| read_gpu_metrics(&self.file, &self.caps, &self.options, &self.cancel)));
            rayon::join(
                || host_evidence(gil, &self.os_calls, api_states, &derived.gaps, &kernels.ops, &graphs),
                || -> Result<Option<(GpuMetrics, GpuMetricTables)>> {
                    let Some(reader) = reader else { return Ok(None) };
                    let samples = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                    let devices =
                        timeline::projection::range_devices(&kernels, &memops, &graphs, &ranges, &samples.devices());
                    let tables = gpu_metric_tables(&samples, &derived.projection, devices);
                    Ok(Some((samples, tables)))
                },
            )
        });
        let HostEvidence { thread_gil, os_call_summary, idle } = host;
        for row in &mut derived.device_metrics {
            row.idle = idle.device(row.device);
        }
        let gpu_metrics = match gpu? {
            Some((samples, tables)) => {
                *self.gpu_samples.lock().unwrap_or_else(|p| p.into_inner()) = Some(samples);
                tables
            }
            None => GpuMetricTables::default(),
        };
        crate::memory::release_free_memory(); // the working buffers of the metrics
        drop(state);
        *self.gaps.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::mem::take(&mut derived.gaps));
        let _ = self.finished.set(Finished {
            derived,
            nvtx,
            projected,
            graph_launches,
            thread_gil,
            os_call_summary,
            idle,
            gpu_metrics,
        });
        Ok(self.finished.get().expect("set above"))
    }

    /// The `graph_launches` rows: each whole-graph execution (graph mode) with its launching call, and the
    /// node-mode executions rebuilt from the kernels with a graph node id.
    fn graph_launches(&self, state: &LaunchState) -> GraphLaunches {
        let (k, g) = (&self.ops.kernels, &self.ops.graphs);
        let first_graph = k.len() + self.ops.memops.len();
        let mut out = GraphLaunches::default();
        for i in 0..g.len() {
            let (thread, _) = state.launched_by(first_graph + i);
            out.push(GraphLaunch {
                device: i64::from(g.device[i]),
                stream: i64::from(g.stream[i]),
                graph_id: g.graph_id[i],
                graph_exec_id: g.graph_exec_id[i],
                start: g.start[i],
                end: g.end[i],
                pid: crate::ids::decode_global_id(g.global_pid[i]).0,
                correlation: g.correlation[i],
                launch_tid: if thread == crate::ids::NULL_I64 { thread } else { thread & 0xFF_FFFF },
                api_start: state.api_start[first_graph + i],
                kernel_count: crate::ids::NULL_I64,
                kernel_ns: crate::ids::NULL_I64,
            });
        }
        if k.any_in_graphs() {
            let nodes: Vec<NodeKernel> = (0..k.len())
                .filter(|&i| k.graph_node(i) != crate::ids::NULL_I64)
                .map(|i| NodeKernel {
                    pid: k.shape_pid[k.shape[i] as usize],
                    correlation: k.correlation(i),
                    device: i64::from(k.device().get(i)),
                    stream: i64::from(k.stream().get(i)),
                    start: k.start[i],
                    end: k.end[i],
                    node: k.graph_node(i),
                    thread: state.launched_by(i).0,
                    api_start: state.api_start[i],
                })
                .collect();
            out.add_node_mode(&nodes, |node| self.graph_info.origin(node));
        }
        out.sorted()
    }

    /// `traces.cuda_graph_trace`: "graph", "node", or None when the capture launched no CUDA graph.
    pub fn cuda_graph_trace(&self) -> Option<&'static str> {
        events::cuda_graph_trace(
            !self.ops.graphs.is_empty(),
            self.ops.kernels.any_in_graphs(),
            &self.graph_info.trace_modes,
        )
    }

    /// Row counts for the `traces` row.
    pub fn counts(&self) -> TraceCounts {
        TraceCounts {
            kernels: self.ops.kernels.len() as u64,
            memops: self.ops.memops.len() as u64,
            api_calls: self.api_rows.load(Ordering::Relaxed),
            nvtx: self.finished.get().map_or(0, |f| f.nvtx.start.len() as u64),
            graph_execs: self.ops.graphs.len() as u64,
        }
    }

    /// Bytes of the trace's long strings (4 KiB or more) that one stored table may hold: the NVTX names
    /// (`nvtx_ranges`, `nvtx_projection`), or twice the long `StringIds` strings (a kernel class's name and
    /// short name). A store keeps such strings outside its column segments, in memory until the rows are
    /// written, so its pool must hold them (issue 19: 88 MB of NVTX text ran a 64MB pool out).
    pub fn long_string_bytes(&self) -> u64 {
        const LONG: usize = 4096;
        let nvtx = self.nvtx_events.long_name_bytes(&self.strings, LONG);
        nvtx.max(2 * self.strings.long_bytes(LONG))
    }

    /// The `kernel_rows` table, built from the kernels held in memory (in export order) and their launch
    /// matches; the repeating columns become a `kernel_class` id (see [`Trace::kernel_classes_batch`]).
    fn kernels_stream(self: &Arc<Self>) -> Result<BatchStream> {
        let schema = kernels_batch(&self.ops.kernels, &self.lock(), 0..0, &mut KernelClassIds::new(0, 0))
            .map_err(arrow_err)?
            .schema();
        let trace = Arc::clone(self);
        let n = self.ops.kernels.len();
        let mut next = 0usize;
        let mut classes = KernelClassIds::new(self.ops.kernels.shapes.len(), self.lock().launchers.len());
        let iter = interruptible(Arc::clone(&self.cancel), move || {
            if next >= n {
                trace.dicts().kernel_classes = Some(std::mem::take(&mut classes.interner.values));
                return None;
            }
            let rows = next..(next + BATCH_ROWS).min(n);
            next = rows.end;
            Some(kernels_batch(&trace.ops.kernels, &trace.lock(), rows, &mut classes))
        });
        Ok(BatchStream::new(schema, Box::new(iter)))
    }

    /// The `gap_rows` table: the stored gaps, then those of each in-order device found again from the
    /// kernels, in batches (one gap per kernel boundary at worst, so never one trace-sized batch).
    fn gaps_stream(self: &Arc<Self>, mut gaps: timeline::Gaps) -> Result<BatchStream> {
        let schema = gaps_batch(&timeline::Gaps::default(), 0..0, &[]).map_err(arrow_err)?.schema();
        let trace = Arc::clone(self);
        let mut stored = 0..gaps.len();
        let mut in_order = std::mem::take(&mut gaps.in_order_devices).into_iter();
        let mut current: Option<(i32, timeline::InOrderGaps)> = None;
        // The idle amounts were kept compactly (idle::GapAmounts); read in order, O(1) a gap.
        let mut scratch = idle::Scratch::default();
        let mut emitted = 0usize;
        let iter = interruptible(Arc::clone(&self.cancel), move || {
            let attribution = &trace.finished.get().expect("gaps are emitted after finish").idle;
            if !stored.is_empty() {
                let rows = stored.start..(stored.start + BATCH_ROWS).min(stored.end);
                stored.start = rows.end;
                let amounts: Vec<idle::Idle> =
                    rows.clone().map(|i| attribution.gap(i, gaps.start[i], gaps.end[i], &mut scratch)).collect();
                emitted = rows.end;
                return Some(gaps_batch(&gaps, rows, &amounts));
            }
            let k = &trace.ops.kernels;
            loop {
                let (device, cursor) = match current.as_mut() {
                    Some(c) => c,
                    None => current.insert((in_order.next()?, timeline::InOrderGaps::default())),
                };
                let (mut starts, mut ends) = (Vec::new(), Vec::new());
                let more = cursor.advance(&k.start, &k.end, k.device(), *device, BATCH_ROWS, |s, e| {
                    starts.push(s);
                    ends.push(e);
                });
                let device = i64::from(*device);
                if !more {
                    current = None;
                }
                if !starts.is_empty() {
                    let amounts: Vec<idle::Idle> = (0..starts.len())
                        .map(|j| attribution.gap(emitted + j, starts[j], ends[j], &mut scratch))
                        .collect();
                    emitted += starts.len();
                    let mut cols = vec![
                        ("device_id", int_col(std::iter::repeat_n(device, starts.len()))),
                        ("start_ns", int_col(starts.into_iter())),
                        ("end_ns", int_col(ends.into_iter())),
                    ];
                    cols.extend(tables::idle_cols(&amounts));
                    return Some(batch(cols));
                }
            }
        });
        Ok(BatchStream::new(schema, Box::new(iter)))
    }

    /// The `kernel_classes` table: one row per `kernel_class` id of `kernel_rows` (read that first).
    fn kernel_classes_batch(&self) -> Result<BatchResult> {
        let dicts = self.dicts();
        let Some(classes) = dicts.kernel_classes.as_ref() else {
            return Err(Error::Invalid("kernel_classes is complete only after kernel_rows was streamed".into()));
        };
        Ok(kernel_classes_batch(classes, &self.ops.kernels.shapes, &self.strings))
    }

    /// The `api_call_classes` table: one row per `call_class` id of the API call stream (read that first).
    fn api_classes_batch(&self) -> Result<BatchResult> {
        let dicts = self.dicts();
        let Some(classes) = dicts.api_classes.as_ref() else {
            return Err(Error::Invalid("api_call_classes is complete only after api_calls was streamed".into()));
        };
        Ok(api_classes_batch(classes, &self.strings))
    }

    /// Every stored table in [`Trace::WRITE_ORDER`], each as `(name, stream)`, produced as the iteration
    /// reaches it: consume each stream before asking for the next pair (a dictionary is complete only
    /// once the stream that builds it was read, and the metrics are derived once the API calls were).
    pub fn tables(self: &Arc<Self>) -> Tables {
        Tables { trace: Arc::clone(self), next: 0, failed: false }
    }

    /// One table of [`Trace::WRITE_ORDER`] as a stream: `api_call_rows` streams the API tables (once);
    /// those of [`Trace::NEEDS_NO_METRICS`] come from what was read at open; any other table first
    /// derives the metrics ([`Trace::finish`], or waits for the background derivation).
    pub fn table(self: &Arc<Self>, name: &str) -> Result<BatchStream> {
        let one = |b: BatchResult| -> Result<BatchStream> {
            Ok(BatchStream::from_batches(b.map_err(arrow_err)?, Vec::new()))
        };
        let t = Arc::clone(self);
        // A cancelled trace stops at its next table, derived or not.
        if name != "api_call_rows" && self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        match name {
            "api_call_rows" => return self.api_stream(),
            "devices" => return one(devices_batch(&self.target, &self.ops)),
            "processes" => return one(processes_batch(&self.target)),
            "threads" => return one(threads_batch(&self.target)),
            "sync_events" => return one(sync_batch(&self.sync, &self.target)),
            "gil_rows" => {
                let gil = Arc::clone(&self.gil);
                return BatchStream::chunked(gil.len(), move |r| gil_rows_batch(&gil, r)).map_err(arrow_err);
            }
            "os_call_rows" => {
                // A batch per packed block of calls (a rowid chunk of the export: ~4 MiB of its pages).
                let schema = os_call_rows_batch(&OsCallBlock::default()).map_err(arrow_err)?.schema();
                let blocks = (0..self.os_calls.blocks.len()).map(move |b| os_call_rows_batch(&t.os_calls.blocks[b]));
                return Ok(BatchStream::new(schema, Box::new(blocks)));
            }
            _ => {}
        }
        let fin = self.finish()?;
        match name {
            "kernel_rows" => self.kernels_stream(),
            "kernel_classes" => one(self.kernel_classes_batch()?),
            "api_call_classes" => one(self.api_classes_batch()?),
            "graph_launches" => one(graph_launches_batch(&fin.graph_launches)),
            "graph_summary" => one(graph_summary_batch(&fin.derived.graph_summary)),
            "memops" => BatchStream::chunked(self.ops.memops.len(), move |r| memops_batch(&t.ops, &t.lock(), r))
                .map_err(arrow_err),
            "nvtx_ranges" => one(nvtx_batch(&fin.nvtx)),
            "device_metrics" => one(metrics_batch(&fin.derived.device_metrics, false)),
            "stream_metrics" => one(metrics_batch(&fin.derived.stream_metrics, true)),
            "concurrency_levels" => one(levels_batch(&fin.derived.concurrency_levels)),
            // One gap per kernel boundary at worst: emit in chunks rather than one trace-sized batch.
            // The largest derived table: handed over to its stream, so it is freed once written.
            "gap_rows" => {
                let Some(gaps) = self.gaps.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                    return Err(Error::Invalid("gap_rows was already emitted".into()));
                };
                self.gaps_stream(gaps)
            }
            "kernel_summary" => one(kernel_summary_batch(&fin.derived.kernel_summary, |id| {
                self.strings.get(id as i64).map(str::to_string)
            })),
            "memop_summary" => one(memop_summary_batch(&fin.derived.memop_summary)),
            "nvtx_projection" => one(projection_batch(&fin.derived.projection, &fin.nvtx, &fin.projected)),
            "thread_gil" => one(thread_gil_batch(&fin.thread_gil, &self.target)),
            "os_call_names" => one(os_call_names_batch(&fin.os_call_summary, &self.strings)),
            "os_call_summary" => one(os_call_summary_batch(&fin.os_call_summary, &self.strings)),
            "gpu_metric_rows" => {
                let samples = self.gpu_samples.lock().unwrap_or_else(|p| p.into_inner()).take();
                Ok(gpu_metric_rows_stream(samples.unwrap_or_default(), Arc::clone(&self.cancel)))
            }
            "gpu_metric_classes" => one(gpu_metric_classes_batch(&fin.gpu_metrics.names)),
            "gpu_metric_summary" => one(gpu_metric_summary_batch(&fin.gpu_metrics.summary, &fin.gpu_metrics.names)),
            "nvtx_gpu_metrics" => one(nvtx_gpu_metrics_batch(&fin.gpu_metrics.by_range, &fin.gpu_metrics.names, |r| {
                fin.projected[r] as i64
            })),
            other => Err(Error::Invalid(format!("unknown table {other}"))),
        }
    }
}

/// What [`host_evidence`] derives.
struct HostEvidence {
    thread_gil: Vec<ThreadGilRow>,
    os_call_summary: Vec<OsCallSummaryRow>,
    idle: IdleAttribution,
}

/// The host-side tables and the idle attribution of every gap: each thread's CUDA calls (`api_states`,
/// collected as the API tables streamed), GIL waits and OS calls become its states, and the OS calls are
/// summarised per name in a pass of their own, beside the states.
fn host_evidence(
    gil: &GilIntervals,
    os_calls: &OsCalls,
    mut states: StateIntervals,
    gaps: &timeline::Gaps,
    kernels: &OpsView<'_>,
    graphs: &OpsView<'_>,
) -> HostEvidence {
    let ((thread_gil, os_call_summary), merged) = rayon::join(
        || {
            let summary = timeline::host::os_call_summary(os_calls.iter().map(|c| (c.name_id, c.end - c.start)));
            (timeline::host::thread_gil(gil), summary)
        },
        || {
            for i in (0..gil.len()).filter(|&i| gil.state[i] == 1) {
                states.push(gil.thread[i], idle::GIL_WAIT, gil.start[i], gil.end[i]);
            }
            for c in os_calls.iter() {
                states.push(c.thread, idle::OS, c.start, c.end);
            }
            states.merged()
        },
    );
    let idle = idle::attribute(gaps, kernels, graphs, merged);
    HostEvidence { thread_gil, os_call_summary, idle }
}

/// The GIL ranges of `events`, and the events without them ([`crate::timeline::nvtx::user_event_rows`]).
fn split_gil(events: NvtxEvents, strings: &StringTable) -> (NvtxEvents, GilIntervals) {
    let text_of = |id| strings.get(id);
    let columns = nvtx_reader::columns(&events);
    let domains = gil_domains(&columns, text_of);
    if domains.is_empty() {
        return (events, GilIntervals::default());
    }
    let gil = gil_intervals(&columns, &domains, text_of);
    let keep = crate::timeline::nvtx::user_event_rows(&columns, &domains);
    let pick = |c: &[i64]| keep.iter().map(|&i| c[i]).collect::<Vec<i64>>();
    let ev = &events;
    let user = NvtxEvents {
        start: pick(&ev.start),
        end: pick(&ev.end),
        event_type: pick(&ev.event_type),
        global_tid: pick(&ev.global_tid),
        text_id: pick(&ev.text_id),
        domain_id: pick(&ev.domain_id),
        text: keep.iter().map(|&i| ev.text[i].clone()).collect(),
    };
    drop(events);
    crate::memory::release_free_memory();
    (user, gil)
}

/// Add the CUDA calls of `chunk` to each thread's `sync` or `cuda_api` intervals (`is_sync` caches, per
/// name id, whether the name contains `Synchronize`).
fn collect_api_states(chunk: &ApiChunk, strings: &StringTable, is_sync: &mut Vec<u8>, states: &mut StateIntervals) {
    for r in 0..chunk.len() {
        let name = chunk.name_id[r];
        let sync = match usize::try_from(name) {
            // StringIds ids are dense from 0; a stray huge id is looked up without the cache.
            Ok(id) if id > 1 << 24 => strings.get(name).is_some_and(|n| n.contains("Synchronize")),
            Ok(id) => {
                if id >= is_sync.len() {
                    is_sync.resize(id + 1, 0);
                }
                if is_sync[id] == 0 {
                    is_sync[id] = if strings.get(name).is_some_and(|n| n.contains("Synchronize")) { 2 } else { 1 };
                }
                is_sync[id] == 2
            }
            Err(_) => false,
        };
        let state = if sync { idle::SYNC } else { idle::CUDA_API };
        states.push(crate::ids::thread_key(chunk.global_tid[r]), state, chunk.start[r], chunk.end[r]);
    }
}

/// Batches from `next` until it returns None, fused; once `cancel` is set (Ctrl-C), one `Interrupted`
/// error instead, then nothing.
fn interruptible(
    cancel: Arc<AtomicBool>,
    mut next: impl FnMut() -> Option<std::result::Result<RecordBatch, ArrowError>> + Send + 'static,
) -> impl Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send + 'static {
    let mut interrupted = false;
    std::iter::from_fn(move || {
        if interrupted {
            return None;
        }
        if cancel.load(Ordering::Relaxed) {
            interrupted = true;
            return Some(Err(ArrowError::ExternalError(Box::new(Error::Interrupted))));
        }
        next()
    })
    .fuse()
}

/// The summaries and per-range means of `samples`; `devices[r]`: the metric devices of range `r`'s work.
pub(crate) fn gpu_metric_tables(
    samples: &GpuMetrics,
    projection: &[timeline::projection::ProjectionRow],
    devices: Vec<Vec<i64>>,
) -> GpuMetricTables {
    let mut devices = devices;
    let windows: Vec<RangeWindow> = projection
        .iter()
        .filter_map(|p| {
            Some(RangeWindow {
                range: p.range,
                gpu_start_ns: p.gpu_start_ns?,
                gpu_end_ns: p.gpu_end_ns?,
                devices: std::mem::take(devices.get_mut(p.range)?),
            })
        })
        .collect();
    GpuMetricTables {
        names: samples.names.clone(),
        summary: gpu_metrics::summaries(samples),
        by_range: gpu_metrics::range_means(samples, &windows),
    }
}

/// The `gpu_metric_rows` stream: series by series, in batches; the samples are freed with the stream.
pub(crate) fn gpu_metric_rows_stream(samples: GpuMetrics, cancel: Arc<AtomicBool>) -> BatchStream {
    let schema = gpu_metric_rows_batch(&Default::default(), 0..0).expect("an empty batch").schema();
    let (mut samples, mut series, mut next) = (samples, 0usize, 0usize);
    let iter = interruptible(cancel, move || loop {
        let s = samples.series.get(series)?;
        if next >= s.len() {
            samples.series[series] = Default::default(); // written: freed now, not with the stream
            series += 1;
            next = 0;
            continue;
        }
        let rows = next..(next + BATCH_ROWS).min(s.len());
        next = rows.end;
        return Some(gpu_metric_rows_batch(s, rows));
    });
    BatchStream::new(schema, Box::new(iter))
}

fn arrow_err(e: ArrowError) -> Error {
    Error::Invalid(format!("arrow: {e}"))
}

/// The stored tables of one trace in write order, as `(name, stream)` pairs (see [`Trace::tables`]).
/// After an error it yields nothing more.
pub struct Tables {
    trace: Arc<Trace>,
    next: usize,
    failed: bool,
}

impl Iterator for Tables {
    type Item = Result<(&'static str, BatchStream)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let name = *Trace::WRITE_ORDER.get(self.next)?;
        self.next += 1;
        match self.trace.table(name) {
            Ok(stream) => Some(Ok((name, stream))),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
