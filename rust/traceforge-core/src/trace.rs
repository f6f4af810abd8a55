//! One trace from export to tables: read, match launches, derive metrics, emit Arrow streams.
//!
//! The order matters and is enforced here: GPU operations are read first (they are what the metrics
//! need), then the CUDA API tables stream through (they are the largest tables and are never held in
//! memory: each chunk is matched against the GPU operations and handed on), then [`Trace::finish`]
//! derives every metric, then the remaining tables are emitted.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{Int32Array, RecordBatch};
use arrow_schema::ArrowError;
use rayon::slice::ParallelSliceMut;

use crate::columnar::{
    batch, dict_col, float_col, int_col, int_col_owned, opt_int_col, str_col, BatchStream, BATCH_ROWS,
};
use crate::error::{Error, Result};
use crate::export::events::{self, copy_kind_label, ApiChunk, GpuOps, NvtxEvents, SyncEvents, TargetInfo};
use crate::export::probe::{DRIVER_TABLE, RUNTIME_TABLE};
use crate::export::scan::{stream_table_ordered, IntColumns};
use crate::export::{decode_global_id, Capabilities, ExportFile, StringTable, NULL_I64};
use crate::timeline::{self, Derived, KernelsView, LaunchKeys, MemopsView, OpsView, RangesView, Threads};

/// `(pid << 24) | tid` from a serialized globalTid.
#[inline]
pub fn thread_key(global_tid: i64) -> i64 {
    if global_tid == NULL_I64 {
        NULL_I64
    } else {
        global_tid & 0xFFFF_FFFF_FFFF
    }
}

pub use crate::export::events::launch_key;

/// Which API call launched each GPU operation (kernels first, then memops).
struct LaunchState {
    /// Op indices with a launch key, sorted by key, for matching API rows.
    order: Vec<u32>,
    /// Index into `launchers` of the (thread, API name) that launched each op, or [`NO_LAUNCHER`]: a
    /// trace has few, so 4 bytes an op instead of 12.
    launcher: Vec<u32>,
    /// Distinct (thread key, API name id or -1) pairs.
    launchers: Vec<(i64, i32)>,
    launcher_ids: ahash::AHashMap<(i64, i32), u32>,
    api_start: Vec<i64>,
    done: bool,
}

/// `LaunchState::launcher` of an op no API call launched (the metrics' "no thread" as well).
const NO_LAUNCHER: u32 = timeline::NO_THREAD;

#[inline]
fn key_of(ops: &GpuOps, op: u32) -> i64 {
    let nk = ops.kernels.len();
    let op = op as usize;
    if op < nk {
        ops.kernels.launch(op)
    } else {
        ops.memops.launch[op - nk]
    }
}

impl LaunchState {
    fn new(ops: &GpuOps) -> Self {
        let n = ops.kernels.len() + ops.memops.len();
        let mut order: Vec<u32> = Vec::with_capacity(n);
        order.extend((0..n as u32).filter(|&op| key_of(ops, op) != NULL_I64));
        // Kernels then memops, each in export order, which is nearly launch order: a run-adaptive (stable)
        // sort merges those few runs in about linear time, where an unstable sort would not notice them.
        order.par_sort_by_key(|&op| key_of(ops, op));
        LaunchState {
            order,
            launcher: vec![NO_LAUNCHER; n],
            launchers: Vec::new(),
            launcher_ids: Default::default(),
            api_start: vec![NULL_I64; n],
            done: false,
        }
    }

    /// The launching thread key and API name id of op `op` (NULL_I64 and -1 when none matched).
    #[inline]
    fn launched_by(&self, op: usize) -> (i64, i32) {
        match self.launcher[op] {
            NO_LAUNCHER => (NULL_I64, -1),
            id => self.launchers[id as usize],
        }
    }

    /// The thread key of each launcher, indexed like `launchers` (for [`timeline::Threads::Indexed`]).
    fn launcher_threads(&self) -> Vec<i64> {
        self.launchers.iter().map(|l| l.0).collect()
    }

    /// First position in `order` whose key is >= `key`, searching forward from `hint` when possible.
    fn lower_bound(&self, ops: &GpuOps, key: i64, hint: usize) -> usize {
        let n = self.order.len();
        let below = |i: usize| key_of(ops, self.order[i]) < key;
        if hint >= n || (hint > 0 && !below(hint - 1)) {
            return self.order.partition_point(|&op| key_of(ops, op) < key);
        }
        // Gallop: find a window [hint + step/2, hint + step) that contains the boundary.
        let mut step = 1usize;
        let mut lo = hint;
        while lo + step < n && below(lo + step) {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step).min(n);
        lo + self.order[lo..hi].partition_point(|&op| key_of(ops, op) < key)
    }

    /// Record the launching call of every GPU op this chunk's rows launched; runtime rows come first,
    /// so a driver row never overrides the runtime call that wraps it.
    fn absorb(&mut self, ops: &GpuOps, chunk: &ApiChunk) {
        if self.order.is_empty() {
            return;
        }
        // API rows arrive in rowid order, so consecutive keys are usually close: search forward from the
        // previous hit (galloping) before falling back to a full binary search.
        let mut hint = 0usize;
        for r in 0..chunk.len() {
            let gtid = chunk.global_tid[r];
            let key = launch_key(decode_global_id(gtid).0, chunk.correlation[r]);
            if key == NULL_I64 {
                continue;
            }
            let lo = self.lower_bound(ops, key, hint);
            hint = lo;
            for &op in &self.order[lo..] {
                if key_of(ops, op) != key {
                    break;
                }
                let op = op as usize;
                if self.api_start[op] == NULL_I64 {
                    self.api_start[op] = chunk.start[r];
                    let launched_by = (thread_key(gtid), i32::try_from(chunk.name_id[r]).unwrap_or(-1));
                    let next = self.launchers.len() as u32;
                    let id = *self.launcher_ids.entry(launched_by).or_insert(next);
                    if id == next {
                        self.launchers.push(launched_by);
                    }
                    self.launcher[op] = id;
                }
            }
        }
    }
}

/// What makes two kernels the same class: every `kernels` column that repeats across launches, i.e. the
/// kernel's shape (an index into `Kernels::shapes`), launching thread and launching API name.
type KernelClassKey = (u32, i64, i64);

/// Columns of `kernel_classes`: the shape's columns, then launch_tid and launch_api, each with whether
/// the value is an interned string.
const KERNEL_CLASS_FIELDS: [(&str, bool); 18] = [
    ("device_id", false),
    ("context_id", false),
    ("stream_id", false),
    ("pid", false),
    ("name", true),
    ("short_name", true),
    ("grid_x", false),
    ("grid_y", false),
    ("grid_z", false),
    ("block_x", false),
    ("block_y", false),
    ("block_z", false),
    ("registers_per_thread", false),
    ("static_shared_bytes", false),
    ("dynamic_shared_bytes", false),
    ("graph_node_id", false),
    ("launch_tid", false),
    ("launch_api", true),
];

/// What makes two API calls the same class: (name id, 0 = runtime / 1 = driver, pid, tid, return value).
type ApiClassKey = (i64, u8, i64, i64, i64);

/// Dense ids for values that repeat millions of times, in first-seen order.
///
/// The store keeps one row per distinct value and a 4-byte id per event: DuckDB spends most of an
/// ingest on strings, and a kernel row spelled out carries ~250 bytes of names.
struct Interner<K> {
    ids: ahash::AHashMap<K, u32>,
    values: Vec<K>,
    /// The last key looked up and its id: runs of one key (a thread launching kernel after kernel) are
    /// the common case, and a comparison is cheaper than a hash.
    last: Option<(K, u32)>,
}

impl<K: std::hash::Hash + Eq + Copy> Interner<K> {
    fn new() -> Self {
        Interner { ids: ahash::AHashMap::new(), values: Vec::new(), last: None }
    }

    #[inline]
    fn id(&mut self, key: K) -> u32 {
        if let Some((last, id)) = self.last {
            if last == key {
                return id;
            }
        }
        let next = self.values.len() as u32;
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.values.push(key);
        }
        self.last = Some((key, id));
        id
    }
}

/// The dictionaries of a trace, complete once the stream that builds each has been read to the end.
#[derive(Default)]
struct Dictionaries {
    kernel_classes: Option<Vec<KernelClassKey>>,
    api_classes: Option<Vec<ApiClassKey>>,
}

/// NVTX ranges and marks with resolved names, sorted by start.
#[derive(Debug, Default, Clone)]
pub struct NvtxRanges {
    pub pid: Vec<i64>,
    pub tid: Vec<i64>,
    pub thread: Vec<i64>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub name: Vec<String>,
    pub domain: Vec<Option<String>>,
    /// "push_pop" | "start_end" | "mark"
    pub kind: Vec<&'static str>,
    pub level: Vec<i64>,
}

impl NvtxRanges {
    /// Indices of the ranges NVTX projection applies to (push/pop and start/end ranges with an end),
    /// with their thread, start and end columns.
    pub fn projectable(&self) -> (Vec<usize>, [Vec<i64>; 3]) {
        let idx: Vec<usize> =
            (0..self.start.len()).filter(|&i| self.kind[i] != "mark" && self.end[i] != NULL_I64).collect();
        let col = |c: &[i64]| idx.iter().map(|&i| c[i]).collect::<Vec<i64>>();
        let cols = [col(&self.thread), col(&self.start), col(&self.end)];
        (idx, cols)
    }
}

const NVTX_MARK: i64 = 34;
const NVTX_PUSH_POP: i64 = 59;
const NVTX_START_END: i64 = 60;
const NVTX_DOMAIN_CREATE: i64 = 75;

/// Resolve names and domains, order by start, and compute push/pop nesting levels per thread.
pub fn build_nvtx_ranges(ev: &NvtxEvents, strings: &StringTable) -> NvtxRanges {
    let mut domains: Vec<(i64, String)> = Vec::new();
    for i in 0..ev.start.len() {
        if ev.event_type[i] == NVTX_DOMAIN_CREATE && ev.domain_id[i] != NULL_I64 {
            let name = ev.text[i].clone().or_else(|| strings.get(ev.text_id[i]).map(str::to_string));
            if let Some(name) = name {
                domains.push((ev.domain_id[i], name));
            }
        }
    }
    let mut rows: Vec<usize> = (0..ev.start.len())
        .filter(|&i| matches!(ev.event_type[i], NVTX_MARK | NVTX_PUSH_POP | NVTX_START_END))
        .collect();
    rows.sort_by_key(|&i| (ev.start[i], thread_key(ev.global_tid[i]), i));
    let mut out = NvtxRanges::default();
    for i in rows {
        let text = ev.text[i].clone().or_else(|| strings.get(ev.text_id[i]).map(str::to_string)).unwrap_or_default();
        let domain = match ev.domain_id[i] {
            NULL_I64 | 0 => None,
            d => domains.iter().find(|x| x.0 == d).map(|x| x.1.clone()),
        };
        let (pid, tid) = decode_global_id(ev.global_tid[i]);
        out.pid.push(pid);
        out.tid.push(tid);
        out.thread.push(thread_key(ev.global_tid[i]));
        out.start.push(ev.start[i]);
        out.end.push(if ev.event_type[i] == NVTX_MARK { NULL_I64 } else { ev.end[i] });
        out.name.push(match &domain {
            Some(d) => format!("{d}:{text}"),
            None => text,
        });
        out.domain.push(domain);
        out.kind.push(match ev.event_type[i] {
            NVTX_PUSH_POP => "push_pop",
            NVTX_START_END => "start_end",
            _ => "mark",
        });
        out.level.push(0);
    }
    assign_levels(&mut out);
    out
}

/// Nesting depth of push/pop ranges on their thread (0 = outermost).
pub fn assign_levels(r: &mut NvtxRanges) {
    let mut idx: Vec<usize> = (0..r.start.len()).filter(|&i| r.kind[i] == "push_pop" && r.end[i] != NULL_I64).collect();
    idx.sort_by_key(|&i| (r.thread[i], r.start[i], std::cmp::Reverse(r.end[i])));
    let mut stack: Vec<i64> = Vec::new();
    let mut current_thread = None;
    for i in idx {
        if current_thread != Some(r.thread[i]) {
            stack.clear();
            current_thread = Some(r.thread[i]);
        }
        while stack.last().is_some_and(|&end| end <= r.start[i]) {
            stack.pop();
        }
        r.level[i] = stack.len() as i64;
        stack.push(r.end[i]);
    }
}

/// Results of [`Trace::finish`].
pub struct Finished {
    pub derived: Derived,
    pub nvtx: NvtxRanges,
    /// Index into `nvtx` of each projected range (the rows of `derived.projection`).
    pub projected: Vec<usize>,
}

/// Counts for the `traces` row.
#[derive(Debug, Clone, Default)]
pub struct TraceCounts {
    pub kernels: u64,
    pub memops: u64,
    pub api_calls: u64,
    pub nvtx: u64,
}

/// One export being ingested.
pub struct Trace {
    pub file: ExportFile,
    pub caps: Capabilities,
    pub strings: StringTable,
    pub target: TargetInfo,
    pub ops: GpuOps,
    pub nvtx_events: NvtxEvents,
    pub sync: SyncEvents,
    pub cancel: Arc<AtomicBool>,
    threads: usize,
    launches: Mutex<LaunchState>,
    /// The API tables' chunks, being read since the trace was opened, until `api_stream` takes them.
    api_chunks: Mutex<Option<ApiChunks>>,
    dictionaries: Mutex<Dictionaries>,
    /// Gaps from [`Trace::finish`] until `gap_rows` is emitted.
    gaps: Mutex<Option<timeline::Gaps>>,
    api_rows: std::sync::atomic::AtomicU64,
    finished: OnceLock<Finished>,
}

/// Chunks of the API tables (0 = runtime, 1 = driver, and the columns of [`ApiChunk`]) in rowid order.
type ApiChunks = Receiver<Result<(u8, IntColumns)>>;

/// Workers reading the API tables at most. Their rows go to DuckDB as one stream, which takes them no
/// faster than a few workers decode them, while each worker holds chunks of several MB: on a 16-core
/// host, 16 workers read llama1b_n1 x6 no faster than 4 and held ~100 MB more.
const API_READ_THREADS: usize = 4;

/// Start reading the runtime then driver API tables on up to `threads` workers; the chunks wait in a
/// bounded queue. Dropping the receiver (or `cancel`) stops the reading.
fn read_api_tables(file: &ExportFile, caps: &Capabilities, threads: usize, cancel: &Arc<AtomicBool>) -> ApiChunks {
    let threads = threads.clamp(1, API_READ_THREADS);
    let (tx, rx) = sync_channel::<Result<(u8, IntColumns)>>(threads * 2);
    let (file, caps, cancel) = (file.clone(), caps.clone(), Arc::clone(cancel));
    std::thread::spawn(move || {
        for (api, table) in [(0u8, RUNTIME_TABLE), (1u8, DRIVER_TABLE)] {
            let Ok(Some(exprs)) = events::api_exprs(&file, &caps, table) else { continue };
            stream_table_ordered(&file, table, &exprs, threads, &cancel, |c| (api, c), tx.clone());
        }
    });
    rx
}

impl Trace {
    /// Open and read everything but the API tables, which start streaming in the background.
    pub fn open(path: &Path, threads: usize, cancel: Arc<AtomicBool>) -> Result<Arc<Trace>> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { threads };
        let file = ExportFile::open(path)?;
        let conn = file.connect()?;
        let caps = Capabilities::probe(&file, &conn)?;
        let strings = StringTable::load(&file, &conn, caps.has_table("StringIds"))?;
        let target = events::read_target_info(&file, &caps, &conn, &strings)?;
        let ops = events::read_gpu_ops(&file, &caps, threads, &cancel)?;
        let nvtx_events = events::read_nvtx(&file, &caps, threads, &cancel)?;
        let sync = events::read_sync(&file, &caps, threads, &cancel)?;
        // Validate the API tables' columns now, before anything streams.
        for table in [RUNTIME_TABLE, DRIVER_TABLE] {
            events::api_exprs(&file, &caps, table)?;
        }
        // The API tables start streaming now, so that their first chunks are read while launches are
        // indexed and the caller gets its store ready; a few chunks wait, bounded, until it streams them.
        let api_chunks = Mutex::new(Some(read_api_tables(&file, &caps, threads, &cancel)));
        let launches = Mutex::new(LaunchState::new(&ops));
        Ok(Arc::new(Trace {
            file,
            caps,
            strings,
            target,
            ops,
            nvtx_events,
            sync,
            cancel,
            threads,
            launches,
            api_chunks,
            dictionaries: Default::default(),
            gaps: Default::default(),
            api_rows: Default::default(),
            finished: OnceLock::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaunchState> {
        self.launches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dicts(&self) -> std::sync::MutexGuard<'_, Dictionaries> {
        self.dictionaries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stream the runtime then driver API tables as `api_calls` batches, matching launches on the way.
    pub fn api_stream(self: &Arc<Self>) -> Result<BatchStream> {
        if self.lock().done {
            return Err(Error::Invalid("api_calls were already streamed".into()));
        }
        let schema = api_batch(ApiChunk::default(), &mut Interner::new()).map_err(arrow_err)?.schema();
        let early = self.api_chunks.lock().unwrap_or_else(|p| p.into_inner()).take();
        let rx = early.unwrap_or_else(|| read_api_tables(&self.file, &self.caps, self.threads, &self.cancel));
        let trace = Arc::clone(self);
        let mut failed = false;
        let mut names = Interner::new();
        let iter = std::iter::from_fn(move || {
            if failed {
                return None;
            }
            match rx.recv() {
                Ok(Ok((api, cols))) => {
                    let chunk = ApiChunk::from_columns(api, cols);
                    trace.lock().absorb(&trace.ops, &chunk);
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
                    None
                }
            }
        });
        Ok(BatchStream::new(schema, Box::new(iter)))
    }

    /// Match launches without emitting api_calls (when the caller does not store them).
    pub fn match_launches_only(self: &Arc<Self>) -> Result<()> {
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
        self.match_launches_only()?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let state = self.lock();
        let k = &self.ops.kernels;
        let m = &self.ops.memops;
        let nk = k.len();
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
        };
        let memops = MemopsView {
            ops: OpsView {
                device: (&m.device).into(),
                stream: (&m.stream).into(),
                start: &m.start,
                end: &m.end,
                thread: Threads::Indexed { ids: &state.launcher[nk..], keys: &launcher_threads },
                api_start: &state.api_start[nk..],
                launch: LaunchKeys::Plain(&m.launch),
            },
            op: &m.op,
            copy_kind: &m.copy_kind,
            bytes: &m.bytes,
        };
        let nvtx = build_nvtx_ranges(&self.nvtx_events, &self.strings);
        let (projected, [r_thread, r_start, r_end]) = nvtx.projectable();
        let ranges = RangesView { thread: &r_thread, start: &r_start, end: &r_end };
        let mut derived = timeline::derive(&kernels, &memops, &ranges);
        drop(state);
        crate::memory::release_free_memory(); // the working buffers of the metrics
        *self.gaps.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::mem::take(&mut derived.gaps));
        let _ = self.finished.set(Finished { derived, nvtx, projected });
        Ok(self.finished.get().expect("set above"))
    }

    /// Row counts for the `traces` row.
    pub fn counts(&self) -> TraceCounts {
        TraceCounts {
            kernels: self.ops.kernels.len() as u64,
            memops: self.ops.memops.len() as u64,
            api_calls: self.api_rows.load(Ordering::Relaxed),
            nvtx: self.finished.get().map_or(0, |f| f.nvtx.start.len() as u64),
        }
    }

    /// The `kernel_rows` table, built from the kernels held in memory (in export order) and their launch
    /// matches; the repeating columns become a `kernel_class` id (see [`Trace::kernel_classes_batch`]).
    fn kernels_stream(self: &Arc<Self>) -> Result<BatchStream> {
        let schema = kernels_batch(self, 0..0, &mut KernelClassIds::new(0, 0)).map_err(arrow_err)?.schema();
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
            Some(kernels_batch(&trace, rows, &mut classes))
        });
        Ok(BatchStream::new(schema, Box::new(iter)))
    }

    /// The `gap_rows` table: the stored gaps, then those of each in-order device found again from the
    /// kernels, in batches (one gap per kernel boundary at worst, so never one trace-sized batch).
    fn gaps_stream(self: &Arc<Self>, mut gaps: timeline::Gaps) -> Result<BatchStream> {
        let schema = gaps_batch(&timeline::Gaps::default(), 0..0).map_err(arrow_err)?.schema();
        let trace = Arc::clone(self);
        let mut stored = 0..gaps.len();
        let mut in_order = std::mem::take(&mut gaps.in_order_devices).into_iter();
        let mut current: Option<(i32, timeline::InOrderGaps)> = None;
        let iter = interruptible(Arc::clone(&self.cancel), move || {
            if !stored.is_empty() {
                let rows = stored.start..(stored.start + BATCH_ROWS).min(stored.end);
                stored.start = rows.end;
                return Some(gaps_batch(&gaps, rows));
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
                    return Some(batch(vec![
                        ("device_id", int_col(std::iter::repeat_n(device, starts.len()))),
                        ("start_ns", int_col(starts.into_iter())),
                        ("end_ns", int_col(ends.into_iter())),
                    ]));
                }
            }
        });
        Ok(BatchStream::new(schema, Box::new(iter)))
    }

    /// The `kernel_classes` table: one row per `kernel_class` id of `kernel_rows` (read that first).
    fn kernel_classes_batch(&self) -> Result<std::result::Result<RecordBatch, ArrowError>> {
        let dicts = self.dicts();
        let Some(classes) = dicts.kernel_classes.as_ref() else {
            return Err(Error::Invalid("kernel_classes is complete only after kernel_rows was streamed".into()));
        };
        let shapes = &self.ops.kernels.shapes;
        let field = |k: &KernelClassKey, i: usize| match i {
            16 => k.1,
            17 => k.2,
            _ => shapes[k.0 as usize][i],
        };
        let mut columns = vec![("kernel_class", int_col(0..classes.len() as i64))];
        for (i, &(name, interned)) in KERNEL_CLASS_FIELDS.iter().enumerate() {
            let column = if interned {
                str_col(classes.iter().map(|k| self.strings.get(field(k, i))))
            } else {
                int_col(classes.iter().map(|k| field(k, i)))
            };
            columns.push((name, column));
        }
        Ok(batch(columns))
    }

    /// The `api_call_classes` table: one row per `call_class` id of the API call stream (read that first).
    fn api_classes_batch(&self) -> Result<std::result::Result<RecordBatch, ArrowError>> {
        let dicts = self.dicts();
        let Some(classes) = dicts.api_classes.as_ref() else {
            return Err(Error::Invalid("api_call_classes is complete only after api_calls was streamed".into()));
        };
        Ok(batch(vec![
            ("call_class", int_col(0..classes.len() as i64)),
            ("pid", int_col(classes.iter().map(|c| c.2))),
            ("tid", int_col(classes.iter().map(|c| c.3))),
            ("name", str_col(classes.iter().map(|c| self.strings.get(c.0)))),
            ("api", str_col(classes.iter().map(|c| Some(api_label(c.1))))),
            ("return_value", int_col(classes.iter().map(|c| c.4))),
        ]))
    }

    /// Names of the tables [`Trace::table`] can emit, in the order they should be written.
    pub const TABLES: [&'static str; 16] = [
        "devices",
        "processes",
        "threads",
        "gap_rows",
        "kernel_rows",
        "kernel_classes",
        "api_call_classes",
        "memops",
        "sync_events",
        "nvtx_ranges",
        "device_metrics",
        "stream_metrics",
        "concurrency_levels",
        "kernel_summary",
        "memop_summary",
        "nvtx_projection",
    ];

    /// Emit one table (after [`Trace::finish`]).
    pub fn table(self: &Arc<Self>, name: &str) -> Result<BatchStream> {
        let fin = self.finish()?;
        let t = Arc::clone(self);
        let one = |b: std::result::Result<RecordBatch, ArrowError>| -> Result<BatchStream> {
            Ok(BatchStream::from_batches(b.map_err(arrow_err)?, Vec::new()))
        };
        match name {
            "kernel_rows" => self.kernels_stream(),
            "kernel_classes" => one(self.kernel_classes_batch()?),
            "api_call_classes" => one(self.api_classes_batch()?),
            "memops" => BatchStream::chunked(self.ops.memops.len(), move |r| memops_batch(&t, r)).map_err(arrow_err),
            "devices" => one(devices_batch(self)),
            "processes" => one(processes_batch(&self.target)),
            "threads" => one(threads_batch(&self.target)),
            "sync_events" => one(sync_batch(&self.sync, &self.target)),
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
            other => Err(Error::Invalid(format!("unknown table {other}"))),
        }
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

fn arrow_err(e: ArrowError) -> Error {
    Error::Invalid(format!("arrow: {e}"))
}

fn api_label(api: u8) -> &'static str {
    if api == 0 {
        "runtime"
    } else {
        "driver"
    }
}

/// One `api_call_rows` batch: what repeats across calls (name, runtime/driver, pid, tid, return value) is
/// a `call_class` id into `api_call_classes`.
fn api_batch(c: ApiChunk, classes: &mut Interner<ApiClassKey>) -> std::result::Result<RecordBatch, ArrowError> {
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

/// Kernel class ids, looked up by (shape, launcher) in a dense table where that is small: a trace has few
/// shapes and fewer launchers, so most kernels find their class without hashing its key.
struct KernelClassIds {
    interner: Interner<KernelClassKey>,
    /// Class id + 1 of shape `s` and launcher `l` at `s * (launchers + 1) + l` (the last slot of a shape
    /// for no launcher), 0 while unknown; empty when the table would be large.
    memo: Vec<u32>,
    launchers: usize,
}

impl KernelClassIds {
    /// Entries above which the dense table is not made (16 MiB).
    const MAX_MEMO: usize = 1 << 22;

    fn new(shapes: usize, launchers: usize) -> Self {
        let size = shapes.saturating_mul(launchers + 1);
        let memo = if size <= Self::MAX_MEMO { vec![0; size] } else { Vec::new() };
        KernelClassIds { interner: Interner::new(), memo, launchers }
    }

    #[inline]
    fn id(&mut self, st: &LaunchState, shape: u32, op: usize) -> u32 {
        let launcher = st.launcher[op];
        let slot = if launcher == NO_LAUNCHER { self.launchers } else { launcher as usize };
        let at = shape as usize * (self.launchers + 1) + slot;
        if let Some(&known) = self.memo.get(at).filter(|&&v| v != 0) {
            return known - 1;
        }
        let (thread, api) = st.launched_by(op);
        let launch_tid = if thread == NULL_I64 { thread } else { thread & 0xFF_FFFF };
        let api = i64::from(api);
        let launch_api = if api < 0 { NULL_I64 } else { api };
        let id = self.interner.id((shape, launch_tid, launch_api));
        if let Some(entry) = self.memo.get_mut(at) {
            *entry = id + 1;
        }
        id
    }
}

/// One `kernel_rows` batch: the kernels in `rows`.
fn kernels_batch(
    t: &Trace,
    rows: std::ops::Range<usize>,
    classes: &mut KernelClassIds,
) -> std::result::Result<RecordBatch, ArrowError> {
    let k = &t.ops.kernels;
    let st = t.lock();
    let class: Vec<i32> = rows.clone().map(|i| classes.id(&st, k.shape[i], i) as i32).collect();
    let api_start = int_col(st.api_start[rows.clone()].iter().copied());
    drop(st);
    batch(vec![
        ("correlation_id", int_col(rows.clone().map(|i| k.correlation(i)))),
        ("start_ns", int_col(k.start[rows.clone()].iter().copied())),
        ("end_ns", int_col(k.end[rows].iter().copied())),
        ("kernel_class", Arc::new(Int32Array::from(class))),
        ("api_start_ns", api_start),
    ])
}

fn memops_batch(t: &Trace, r: std::ops::Range<usize>) -> std::result::Result<RecordBatch, ArrowError> {
    let m = &t.ops.memops;
    let nk = t.ops.kernels.len();
    let st = t.lock();
    let launch_tid = int_col((nk + r.start..nk + r.end).map(|op| st.launched_by(op).0).map(|x| {
        if x == NULL_I64 {
            x
        } else {
            x & 0xFF_FFFF
        }
    }));
    let api_start = int_col(st.api_start[nk + r.start..nk + r.end].iter().copied());
    drop(st);
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

fn devices_batch(t: &Trace) -> std::result::Result<RecordBatch, ArrowError> {
    let mut gpus = t.target.gpus.clone();
    let kernels = &t.ops.kernels;
    let mut seen: Vec<i64> = kernels.shape_device.iter().chain(&t.ops.memops.device).map(|&d| i64::from(d)).collect();
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

fn processes_batch(t: &TargetInfo) -> std::result::Result<RecordBatch, ArrowError> {
    batch(vec![
        ("pid", int_col(t.processes.iter().map(|p| p.0))),
        ("name", str_col(t.processes.iter().map(|p| p.1.as_deref()))),
    ])
}

fn threads_batch(t: &TargetInfo) -> std::result::Result<RecordBatch, ArrowError> {
    batch(vec![
        ("pid", int_col(t.threads.iter().map(|p| p.0))),
        ("tid", int_col(t.threads.iter().map(|p| p.1))),
        ("name", str_col(t.threads.iter().map(|p| p.2.as_deref()))),
    ])
}

fn sync_batch(s: &SyncEvents, t: &TargetInfo) -> std::result::Result<RecordBatch, ArrowError> {
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
pub fn levels_batch(rows: &[(i64, i64, i64)]) -> std::result::Result<RecordBatch, ArrowError> {
    batch(vec![
        ("device_id", int_col(rows.iter().map(|x| x.0))),
        ("level", int_col(rows.iter().map(|x| x.1))),
        ("time_ns", int_col(rows.iter().map(|x| x.2))),
    ])
}

/// `gap_rows` batch (the storage behind the `gaps` view) of the gaps in `range`.
pub fn gaps_batch(
    gaps: &timeline::Gaps,
    range: std::ops::Range<usize>,
) -> std::result::Result<RecordBatch, ArrowError> {
    batch(vec![
        ("device_id", int_col(gaps.devices(range.clone()))),
        ("start_ns", int_col(gaps.start[range.clone()].iter().copied())),
        ("end_ns", int_col(gaps.end[range].iter().copied())),
    ])
}

/// `nvtx_ranges` batch.
pub fn nvtx_batch(n: &NvtxRanges) -> std::result::Result<RecordBatch, ArrowError> {
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
pub fn metrics_batch(rows: &[timeline::MetricRow], per_stream: bool) -> std::result::Result<RecordBatch, ArrowError> {
    let i = |f: fn(&timeline::MetricRow) -> i64| int_col(rows.iter().map(f));
    let oi = |f: fn(&timeline::MetricRow) -> Option<i64>| opt_int_col(rows.iter().map(f));
    let of = |f: fn(&timeline::MetricRow) -> Option<f64>| float_col(rows.iter().map(f));
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
    ]);
    batch(cols)
}

/// `kernel_summary` batch; `name_of` resolves interned names.
pub fn kernel_summary_batch(
    rows: &[timeline::KernelSummaryRow],
    name_of: impl Fn(u32) -> Option<String>,
) -> std::result::Result<RecordBatch, ArrowError> {
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
    ])
}

/// `memop_summary` batch.
pub fn memop_summary_batch(rows: &[timeline::MemopSummaryRow]) -> std::result::Result<RecordBatch, ArrowError> {
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
pub fn projection_batch(
    rows: &[timeline::projection::ProjectionRow],
    n: &NvtxRanges,
    projected: &[usize],
) -> std::result::Result<RecordBatch, ArrowError> {
    let at = |r: &timeline::projection::ProjectionRow| projected[r.range];
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
    ])
}
