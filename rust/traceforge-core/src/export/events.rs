//! Typed, column-major event tables read from an export: GPU operations (kernels held compact, by
//! shape), CUDA API chunks, NVTX events, synchronization events, and the capture's target information.
use std::sync::atomic::AtomicBool;

use rusqlite::types::ValueRef;

use super::open::ExportFile;
use super::probe::{self, Capabilities};
use super::scan::{scan_chunk_rows, scan_table, IntColumns, RowSink, ScanReader};
use super::strings::StringTable;
use crate::error::{Error, Result};
use crate::ids::{decode_global_id, launch_key, NULL_I64};
use crate::options::IngestOptions;
use crate::views::{Column, Correlations, LaunchKeys};

fn exprs(caps: &Capabilities, table: &str, columns: &[&str]) -> Vec<String> {
    columns.iter().map(|c| caps.column_or_null(table, c)).collect()
}

fn take(cols: &mut IntColumns, i: usize) -> Vec<i64> {
    std::mem::take(&mut cols[i])
}

/// What a kernel shares with other launches of the same kernel on the same stream: every stored column
/// but its times, correlation id and launching call, in [`SHAPE_COLUMNS`] order (strings as `StringIds`
/// ids, NULL as [`NULL_I64`]).
pub type KernelShape = [i64; 16];

/// Positions in [`KERNEL_COLUMNS`] of the columns of a [`KernelShape`] (pid is decoded from globalPid).
const SHAPE_COLUMNS: [usize; 16] = [2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];

/// Kernels, compact and column-major: times, correlation id and a shape id per kernel (24 bytes a
/// kernel), so that the `kernels` table is emitted from memory without reading the export twice. What a
/// shape fixes (device, stream, name, process) is looked up through the shape id, not held per kernel.
#[derive(Debug, Default, Clone)]
pub struct Kernels {
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    /// Index into `shapes`.
    pub shape: Vec<u32>,
    /// correlationId, or [`Correlations::WIDE`] when NULL or too large (then in `wide_correlation`).
    pub correlation: Vec<u32>,
    /// (kernel index, correlationId) of the ids `correlation` cannot hold, by kernel index.
    pub wide_correlation: Vec<(u32, i64)>,
    /// Distinct shapes, in first-seen order.
    pub shapes: Vec<KernelShape>,
    /// Device, stream, name id and pid of each shape (see [`Kernels::index_shapes`]).
    pub shape_device: Vec<i32>,
    pub shape_stream: Vec<i32>,
    pub shape_name: Vec<u32>,
    pub shape_pid: Vec<i64>,
}

/// Positions in a [`KernelShape`].
const SHAPE_DEVICE: usize = 0;
const SHAPE_STREAM: usize = 2;
const SHAPE_PID: usize = 3;
const SHAPE_NAME: usize = 4;
/// Position of `graphNodeId` in a [`KernelShape`].
pub const SHAPE_GRAPH_NODE: usize = 15;

impl Kernels {
    /// Number of kernels.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is no kernel.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// Fill the per-shape lookups from `shapes`.
    pub fn index_shapes(&mut self) {
        let s = &self.shapes;
        self.shape_device = s.iter().map(|k| small_id(k[SHAPE_DEVICE])).collect();
        self.shape_stream = s.iter().map(|k| small_id(k[SHAPE_STREAM])).collect();
        self.shape_name = s.iter().map(|k| u32::try_from(k[SHAPE_NAME]).unwrap_or(u32::MAX)).collect();
        self.shape_pid = s.iter().map(|k| k[SHAPE_PID]).collect();
    }

    /// The device of each kernel, through its shape.
    pub fn device(&self) -> Column<'_, i32> {
        Column::Indexed { ids: &self.shape, values: &self.shape_device }
    }
    /// The stream of each kernel, through its shape.
    pub fn stream(&self) -> Column<'_, i32> {
        Column::Indexed { ids: &self.shape, values: &self.shape_stream }
    }
    /// The interned name of each kernel, through its shape.
    pub fn name(&self) -> Column<'_, u32> {
        Column::Indexed { ids: &self.shape, values: &self.shape_name }
    }
    /// The correlation id of each kernel.
    pub fn correlations(&self) -> Correlations<'_> {
        Correlations { narrow: &self.correlation, wide: &self.wide_correlation }
    }
    /// The launch key of each kernel, composed from its shape's process and its correlation id.
    pub fn launch_keys(&self) -> LaunchKeys<'_> {
        LaunchKeys::Composed {
            pid: Column::Indexed { ids: &self.shape, values: &self.shape_pid },
            correlation: self.correlations(),
        }
    }

    /// The graph node id of kernel `i` (NULL_I64 outside graphs).
    #[inline]
    pub fn graph_node(&self, i: usize) -> i64 {
        self.shapes[self.shape[i] as usize][SHAPE_GRAPH_NODE]
    }

    /// Whether any kernel ran as a node of a CUDA graph (node-mode graph tracing).
    pub fn any_in_graphs(&self) -> bool {
        self.shapes.iter().any(|s| s[SHAPE_GRAPH_NODE] != NULL_I64)
    }

    /// The correlation id of kernel `i` (NULL_I64 when the export has none).
    #[inline]
    pub fn correlation(&self, i: usize) -> i64 {
        self.correlations().get(i)
    }

    /// The launch key of kernel `i` (see [`launch_key`]).
    #[inline]
    pub fn launch(&self, i: usize) -> i64 {
        launch_key(self.shape_pid[self.shape[i] as usize], self.correlation(i))
    }
}

/// Memcpy and memset operations, column-major; `op` is 0 for memcpy, 1 for memset.
#[derive(Debug, Default, Clone)]
pub struct Memops {
    pub op: Vec<u8>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub device: Vec<i32>,
    pub stream: Vec<i32>,
    pub correlation: Vec<i64>,
    pub global_pid: Vec<i64>,
    pub bytes: Vec<i64>,
    pub copy_kind: Vec<i64>,
    /// Launch key `(pid << 40) | correlationId`, or NULL.
    pub launch: Vec<i64>,
}

impl Memops {
    /// Number of memcpy and memset operations.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// Whole-graph executions (`CUPTI_ACTIVITY_KIND_GRAPH_TRACE` rows, graph mode), column-major. A trace holds
/// few (one per `cudaGraphLaunch`), so they keep plain columns of their own, apart from the compact kernels.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GraphExecs {
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub device: Vec<i32>,
    pub stream: Vec<i32>,
    pub correlation: Vec<i64>,
    pub global_pid: Vec<i64>,
    pub graph_id: Vec<i64>,
    pub graph_exec_id: Vec<i64>,
    /// Launch key `(pid << 40) | correlationId`, or NULL.
    pub launch: Vec<i64>,
}

impl GraphExecs {
    /// Number of graph executions.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// What an export says about CUDA graphs beyond the executions: node clones and the recorded trace mode.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GraphInfo {
    /// `CUDA_GRAPH_NODE_EVENTS`: (graphNodeId, originalGraphNodeId or NULL), sorted by node id; where a node
    /// appears twice (created, then cloned) the row with an original wins.
    pub node_origins: Vec<(i64, i64)>,
    /// `META_DATA_CAPTURE` `PROCESS_<n>:CUDA_GRAPH_TRACE_OPTIONS:MODE` values, by process index n.
    pub trace_modes: Vec<(u64, String)>,
}

impl GraphInfo {
    /// The original of graph node `node` (NULL_I64 when it is no clone or unknown).
    pub fn origin(&self, node: i64) -> i64 {
        self.node_origins.binary_search_by_key(&node, |x| x.0).map_or(NULL_I64, |i| self.node_origins[i].1)
    }
}

/// Every GPU operation of a trace.
#[derive(Debug, Default, Clone)]
pub struct GpuOps {
    pub kernels: Kernels,
    pub memops: Memops,
    /// Whole-graph executions (empty unless the capture traced graphs as a whole).
    pub graphs: GraphExecs,
}

impl GpuOps {
    /// Number of operations of every kind (kernels, then memops, then graph executions: the index space of
    /// launch matching).
    pub fn len(&self) -> usize {
        self.kernels.len() + self.memops.len() + self.graphs.len()
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A device or stream id as i32 (nsys ids are small; NULL and out-of-range become -1).
#[inline]
fn small_id(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(-1)
}

/// CUPTI memcpy kind ids (ENUM_CUDA_MEMCPY_OPER) as the short labels traceforge stores.
pub fn copy_kind_label(kind: i64) -> &'static str {
    match kind {
        1 => "HtoD",
        2 => "DtoH",
        3 => "HtoA",
        4 => "AtoH",
        5 => "AtoA",
        6 => "AtoD",
        7 => "DtoA",
        8 => "DtoD",
        9 => "HtoH",
        10 => "PtoP",
        11 => "UVM_HtoD",
        12 => "UVM_DtoH",
        13 => "UVM_DtoD",
        _ => "Unknown",
    }
}

/// Every kernel column traceforge stores, in the order `kernel_exprs` selects them.
pub const KERNEL_COLUMNS: [&str; 19] = [
    "start",
    "end",
    "deviceId",
    "contextId",
    "streamId",
    "correlationId",
    "globalPid",
    "demangledName",
    "shortName",
    "gridX",
    "gridY",
    "gridZ",
    "blockX",
    "blockY",
    "blockZ",
    "registersPerThread",
    "staticSharedMemory",
    "dynamicSharedMemory",
    "graphNodeId",
];

/// Select expressions for [`KERNEL_COLUMNS`] in this export (NULL for absent columns).
pub fn kernel_exprs(file: &ExportFile, caps: &Capabilities) -> Result<Vec<String>> {
    let t = probe::KERNEL_TABLE;
    if !caps.has_table(t) {
        return Err(Error::MissingTable {
            path: file.path.clone(),
            reason: format!("no CUDA kernels in this export (table {t} is absent: was the capture made with -t cuda?)"),
        });
    }
    caps.require_columns(file, t, &["start", "end", "deviceId", "streamId"])?;
    if !caps.has_column(t, "demangledName") && !caps.has_column(t, "shortName") {
        caps.require_columns(file, t, &["demangledName"])?;
    }
    let mut kexprs = exprs(caps, t, &KERNEL_COLUMNS);
    if !caps.has_column(t, "demangledName") {
        kexprs[7] = "\"shortName\"".into();
    }
    if !caps.has_column(t, "shortName") {
        kexprs[8] = kexprs[7].clone();
    }
    Ok(kexprs)
}

/// Read kernels (compact), memcpy and memset.
pub(crate) fn read_gpu_ops(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
) -> Result<GpuOps> {
    let t = probe::KERNEL_TABLE;
    let kernel_columns = kernel_exprs(file, caps)?;
    let (threads, reader) = (options.reader_threads(), ScanReader::chosen(options));
    // Each chunk interns its shapes locally (chunks are read in parallel); ids are made global below.
    let parts = scan_chunk_rows(file, t, &kernel_columns, threads, cancel, reader, KernelChunk::with_capacity)?;
    let kernels = concat_kernels(parts, options.low_memory_above);
    crate::memory::release_free_memory(); // the chunks' pieces
    let mut memops = Memops::default();
    for (op, table) in [(0u8, probe::MEMCPY_TABLE), (1u8, probe::MEMSET_TABLE)] {
        if !caps.has_table(table) {
            continue;
        }
        caps.require_columns(file, table, &["start", "end", "deviceId", "streamId", "bytes"])?;
        let cols = ["start", "end", "deviceId", "streamId", "correlationId", "globalPid", "bytes", "copyKind"];
        let (mut c, _) = scan_table(file, table, &exprs(caps, table, &cols), &[], threads, cancel, reader)?;
        let n = c[0].len();
        memops.op.extend(std::iter::repeat_n(op, n));
        memops.start.extend(take(&mut c, 0));
        memops.end.extend(take(&mut c, 1));
        memops.device.extend(c[2].iter().map(|&v| small_id(v)));
        memops.stream.extend(c[3].iter().map(|&v| small_id(v)));
        memops.launch.extend(c[5].iter().zip(&c[4]).map(|(&g, &corr)| launch_key(decode_global_id(g).0, corr)));
        memops.correlation.extend(take(&mut c, 4));
        memops.global_pid.extend(take(&mut c, 5));
        memops.bytes.extend(take(&mut c, 6));
        memops.copy_kind.extend(take(&mut c, 7));
    }
    Ok(GpuOps { kernels, memops, graphs: GraphExecs::default() })
}

/// Read the whole-graph executions (`CUPTI_ACTIVITY_KIND_GRAPH_TRACE`; none when the table is absent), the
/// graph node clones and the recorded CUDA graph trace mode. The tables are small: plain queries.
pub(crate) fn read_graphs(
    file: &ExportFile,
    caps: &Capabilities,
    conn: &rusqlite::Connection,
) -> Result<(GraphExecs, GraphInfo)> {
    let mut g = GraphExecs::default();
    let t = probe::GRAPH_TRACE_TABLE;
    if caps.has_table(t) {
        caps.require_columns(file, t, &["start", "end", "deviceId", "streamId"])?;
        let cols = ["start", "end", "deviceId", "streamId", "correlationId", "globalPid", "graphId", "graphExecId"];
        let sql = format!("SELECT {} FROM {t} ORDER BY rowid", exprs(caps, t, &cols).join(", "));
        for_each_row(file, conn, &sql, |r| {
            let cell = |i: usize| r.get_ref(i).map(int_cell);
            g.start.push(cell(0)?);
            g.end.push(cell(1)?);
            g.device.push(small_id(cell(2)?));
            g.stream.push(small_id(cell(3)?));
            let (correlation, global_pid) = (cell(4)?, cell(5)?);
            g.correlation.push(correlation);
            g.global_pid.push(global_pid);
            g.launch.push(launch_key(decode_global_id(global_pid).0, correlation));
            g.graph_id.push(cell(6)?);
            g.graph_exec_id.push(cell(7)?);
            Ok(())
        })?;
    }
    let mut info = GraphInfo::default();
    let t = probe::GRAPH_NODE_EVENTS_TABLE;
    if caps.has_column(t, "graphNodeId") {
        let original = caps.column_or_null(t, "originalGraphNodeId");
        let order = if caps.has_column(t, "start") { "start, rowid" } else { "rowid" };
        let sql = format!("SELECT graphNodeId, {original} FROM {t} ORDER BY {order}");
        let mut origins: ahash::AHashMap<i64, i64> = ahash::AHashMap::new();
        for_each_row(file, conn, &sql, |r| {
            let (node, original) = (int_cell(r.get_ref(0)?), int_cell(r.get_ref(1)?));
            if node != NULL_I64 && (original != NULL_I64 || !origins.contains_key(&node)) {
                origins.insert(node, original);
            }
            Ok(())
        })?;
        info.node_origins = origins.into_iter().collect();
        info.node_origins.sort_unstable();
    }
    let t = probe::CAPTURE_META_TABLE;
    if caps.has_column(t, "name") && caps.has_column(t, "value") {
        // Only the graph keys: the table also holds the profiled process's whole environment.
        let sql =
            format!("SELECT name, CAST(value AS TEXT) FROM {t} WHERE name LIKE '%:CUDA_GRAPH_TRACE_OPTIONS:MODE'");
        let mut modes: std::collections::BTreeMap<u64, String> = Default::default();
        for_each_row(file, conn, &sql, |r| {
            let name = text_cell(r.get_ref(0)?).unwrap_or_default();
            let value = text_cell(r.get_ref(1)?);
            if let (Some(index), Some(value)) = (capture_mode_process(&name), value) {
                modes.insert(index, value);
            }
            Ok(())
        })?;
        info.trace_modes = modes.into_iter().collect();
    }
    Ok((g, info))
}

/// The process index n of a `PROCESS_<n>:CUDA_GRAPH_TRACE_OPTIONS:MODE` key.
fn capture_mode_process(name: &str) -> Option<u64> {
    let mut parts = name.split(':');
    let process = parts.next()?.strip_prefix("PROCESS_")?;
    let rest: Vec<&str> = parts.collect();
    if rest != ["CUDA_GRAPH_TRACE_OPTIONS", "MODE"]
        || process.is_empty()
        || !process.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    process.parse().ok()
}

/// `traces.cuda_graph_trace`: "graph", "node" or None. None when the capture launched no graph (no graph
/// execution and no kernel with a graph node id; nsys 2025.3 records `MODE = Graph` in every capture, graphs
/// or not). Otherwise the recorded mode, lowercased, when every process that has one says the same `Graph` or
/// `Node`; else inferred from the rows: "graph" when there are graph executions, "node" otherwise.
pub fn cuda_graph_trace(
    has_graph_execs: bool,
    has_node_kernels: bool,
    trace_modes: &[(u64, String)],
) -> Option<&'static str> {
    if !has_graph_execs && !has_node_kernels {
        return None;
    }
    let mut said: Vec<String> = trace_modes.iter().map(|(_, v)| v.trim().to_lowercase()).collect();
    said.sort_unstable();
    said.dedup();
    match said.as_slice() {
        [one] if one == "graph" => Some("graph"),
        [one] if one == "node" => Some("node"),
        _ if has_graph_execs => Some("graph"),
        _ => Some("node"),
    }
}

/// One chunk of the kernel table being read: each row reduced to its times, correlation id and a shape id
/// into the chunk's own list of shapes as it is decoded.
struct KernelChunk {
    kernels: Kernels,
    ids: ahash::AHashMap<KernelShape, u32>,
}

impl KernelChunk {
    fn with_capacity(rows: usize) -> Self {
        let kernels = Kernels {
            start: Vec::with_capacity(rows),
            end: Vec::with_capacity(rows),
            shape: Vec::with_capacity(rows),
            correlation: Vec::with_capacity(rows),
            ..Default::default()
        };
        KernelChunk { kernels, ids: ahash::AHashMap::new() }
    }
}

impl RowSink for KernelChunk {
    type Out = Kernels;

    #[inline]
    fn row(&mut self, c: &[i64]) {
        let k = &mut self.kernels;
        let i = k.start.len();
        k.start.push(c[0]);
        k.end.push(c[1]);
        let mut key: KernelShape = [0; 16];
        for (slot, &col) in key.iter_mut().zip(&SHAPE_COLUMNS) {
            *slot = c[col];
        }
        key[SHAPE_PID] = decode_global_id(key[SHAPE_PID]).0;
        let next = k.shapes.len() as u32;
        k.shape.push(*self.ids.entry(key).or_insert_with(|| {
            k.shapes.push(key);
            next
        }));
        let id = c[5];
        match u32::try_from(id) {
            Ok(narrow) if narrow != Correlations::WIDE => k.correlation.push(narrow),
            _ => {
                k.correlation.push(Correlations::WIDE);
                if id != NULL_I64 {
                    k.wide_correlation.push((i as u32, id));
                }
            }
        }
    }

    fn finish(self) -> Kernels {
        self.kernels
    }
}

/// Join per-chunk kernels in rowid order, renumbering shape ids to one trace-wide list. Columns are
/// copied one at a time, each chunk's piece freed as it goes, so the peak is the table plus one column;
/// up to `low_memory_above` kernels the columns are gathered side by side instead.
fn concat_kernels(mut parts: Vec<Kernels>, low_memory_above: usize) -> Kernels {
    let total: usize = parts.iter().map(Kernels::len).sum();
    let mut ids: ahash::AHashMap<KernelShape, u32> = ahash::AHashMap::new();
    let mut out = Kernels::default();
    out.shape.reserve_exact(total);
    let mut offset = 0u32;
    for p in parts.iter_mut() {
        let remap: Vec<u32> = p
            .shapes
            .iter()
            .map(|key| {
                let next = out.shapes.len() as u32;
                *ids.entry(*key).or_insert_with(|| {
                    out.shapes.push(*key);
                    next
                })
            })
            .collect();
        out.shape.extend(p.shape.iter().map(|&s| remap[s as usize]));
        out.wide_correlation.extend(p.wide_correlation.iter().map(|&(i, c)| (i + offset, c)));
        offset += p.len() as u32;
        p.shape = Vec::new();
        p.shapes = Vec::new();
    }
    out.index_shapes();
    // Each column is gathered by its own task (the copies are independent), each part's piece freed as
    // soon as it is copied so that a column never exists twice in full.
    fn column<T: Copy + Send>(pieces: Vec<Vec<T>>, total: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(total);
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
        out
    }
    fn pieces<T>(parts: &mut [Kernels], field: impl Fn(&mut Kernels) -> &mut Vec<T>) -> Vec<Vec<T>> {
        parts.iter_mut().map(|p| std::mem::take(field(p))).collect()
    }
    let (start, end) = (pieces(&mut parts, |p| &mut p.start), pieces(&mut parts, |p| &mut p.end));
    let correlation = pieces(&mut parts, |p| &mut p.correlation);
    if total <= low_memory_above {
        ((out.start, out.end), out.correlation) =
            rayon::join(|| rayon::join(|| column(start, total), || column(end, total)), || column(correlation, total));
    } else {
        // One column at a time, its pieces handed back to the system before the next is built, so that
        // the kernels exist about once, not twice, at the peak.
        crate::memory::release_free_memory();
        out.start = column(start, total);
        crate::memory::release_free_memory();
        out.end = column(end, total);
        crate::memory::release_free_memory();
        out.correlation = column(correlation, total);
    }
    out
}

/// A chunk of CUDA API calls (runtime or driver).
#[derive(Debug, Default, Clone)]
pub struct ApiChunk {
    /// 0 = runtime, 1 = driver.
    pub api: u8,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub global_tid: Vec<i64>,
    pub correlation: Vec<i64>,
    pub name_id: Vec<i64>,
    pub return_value: Vec<i64>,
}

impl ApiChunk {
    /// The API table columns a chunk holds, in field order.
    pub const COLUMNS: [&'static str; 6] = ["start", "end", "globalTid", "correlationId", "nameId", "returnValue"];

    /// A chunk of table `api` from its [`ApiChunk::COLUMNS`] as scanned.
    pub fn from_columns(api: u8, mut c: IntColumns) -> Self {
        ApiChunk {
            api,
            start: take(&mut c, 0),
            end: take(&mut c, 1),
            global_tid: take(&mut c, 2),
            correlation: take(&mut c, 3),
            name_id: take(&mut c, 4),
            return_value: take(&mut c, 5),
        }
    }

    /// Number of API calls.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// Select expressions for an API table, or None when it is absent.
pub(crate) fn api_exprs(file: &ExportFile, caps: &Capabilities, table: &str) -> Result<Option<Vec<String>>> {
    if !caps.has_table(table) {
        return Ok(None);
    }
    caps.require_columns(file, table, &["start", "end", "globalTid", "correlationId", "nameId"])?;
    Ok(Some(exprs(caps, table, &ApiChunk::COLUMNS)))
}

/// NVTX events as stored (all event types), column-major.
#[derive(Debug, Default, Clone)]
pub struct NvtxEvents {
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub event_type: Vec<i64>,
    pub global_tid: Vec<i64>,
    pub text_id: Vec<i64>,
    pub domain_id: Vec<i64>,
    pub text: Vec<Option<String>>,
}

impl NvtxEvents {
    /// Bytes of the event names (explicit `text`, else the registered string of `textId`) of at least
    /// `min` bytes: the stored NVTX tables hold each event's name once.
    pub fn long_name_bytes(&self, strings: &StringTable, min: usize) -> u64 {
        let name_len = |i: usize| match self.text.get(i) {
            Some(Some(text)) => text.len(),
            _ => self.text_id.get(i).and_then(|&id| strings.get(id)).map_or(0, str::len),
        };
        (0..self.start.len()).map(name_len).filter(|&n| n >= min).map(|n| n as u64).sum()
    }
}

/// Read every NVTX event (an export without NVTX gives none).
pub(crate) fn read_nvtx(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
) -> Result<NvtxEvents> {
    let (threads, reader) = (options.reader_threads(), ScanReader::chosen(options));
    let t = probe::NVTX_TABLE;
    if !caps.has_table(t) {
        return Ok(NvtxEvents::default());
    }
    caps.require_columns(file, t, &["start", "eventType"])?;
    let cols = ["start", "end", "eventType", "globalTid", "textId", "domainId"];
    let text = vec![caps.column_or_null(t, "text")];
    let (mut c, mut texts) = scan_table(file, t, &exprs(caps, t, &cols), &text, threads, cancel, reader)?;
    Ok(NvtxEvents {
        start: take(&mut c, 0),
        end: take(&mut c, 1),
        event_type: take(&mut c, 2),
        global_tid: take(&mut c, 3),
        text_id: take(&mut c, 4),
        domain_id: take(&mut c, 5),
        text: std::mem::take(&mut texts[0]),
    })
}

/// Synchronization events.
#[derive(Debug, Default, Clone)]
pub struct SyncEvents {
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub device: Vec<i64>,
    pub stream: Vec<i64>,
    pub correlation: Vec<i64>,
    pub global_pid: Vec<i64>,
    pub sync_type: Vec<i64>,
}

/// Read the synchronization events (an export without them gives none).
pub(crate) fn read_sync(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
) -> Result<SyncEvents> {
    let (threads, reader) = (options.reader_threads(), ScanReader::chosen(options));
    let t = probe::SYNC_TABLE;
    if !caps.has_table(t) {
        return Ok(SyncEvents::default());
    }
    caps.require_columns(file, t, &["start", "end"])?;
    let cols = ["start", "end", "deviceId", "streamId", "correlationId", "globalPid", "syncType"];
    let (mut c, _) = scan_table(file, t, &exprs(caps, t, &cols), &[], threads, cancel, reader)?;
    Ok(SyncEvents {
        start: take(&mut c, 0),
        end: take(&mut c, 1),
        device: take(&mut c, 2),
        stream: take(&mut c, 3),
        correlation: take(&mut c, 4),
        global_pid: take(&mut c, 5),
        sync_type: take(&mut c, 6),
    })
}

/// One GPU from `TARGET_INFO_GPU`.
#[derive(Debug, Default, Clone)]
pub struct GpuInfo {
    pub id: i64,
    pub name: Option<String>,
    pub chip_name: Option<String>,
    pub bus_location: Option<String>,
    pub uuid: Option<String>,
    pub sm_count: i64,
    pub total_memory: i64,
    pub memory_bandwidth: i64,
    pub clock_rate: i64,
    pub compute_major: i64,
    pub compute_minor: i64,
    pub cuda_device: i64,
}

/// Everything about the capture that is not an event: GPUs, processes, threads, clocks, enums.
#[derive(Debug, Default, Clone)]
pub struct TargetInfo {
    pub gpus: Vec<GpuInfo>,
    /// (pid, name)
    pub processes: Vec<(i64, Option<String>)>,
    /// (pid, tid, name)
    pub threads: Vec<(i64, i64, Option<String>)>,
    pub session_start_utc_ns: i64,
    pub trace_start_ns: i64,
    pub trace_end_ns: i64,
    /// ENUM_CUPTI_SYNC_TYPE id -> label
    pub sync_type_names: Vec<(i64, String)>,
}

fn text_cell(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        _ => None,
    }
}

fn int_cell(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        ValueRef::Real(f) => f as i64,
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(NULL_I64),
        _ => NULL_I64,
    }
}

/// Run `sql` and hand every row to `f`.
fn for_each_row(
    file: &ExportFile,
    conn: &rusqlite::Connection,
    sql: &str,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare(sql).map_err(|e| file.sqlite_error(e))?;
    let mut rows = stmt.query([]).map_err(|e| file.sqlite_error(e))?;
    while let Some(row) = rows.next().map_err(|e| file.sqlite_error(e))? {
        f(row).map_err(|e| file.sqlite_error(e))?;
    }
    Ok(())
}

/// Read the GPUs, processes, thread names, session start, trace bounds and sync type labels that this
/// export has (each absent table is skipped).
pub(crate) fn read_target_info(
    file: &ExportFile,
    caps: &Capabilities,
    conn: &rusqlite::Connection,
    strings: &super::StringTable,
) -> Result<TargetInfo> {
    let mut info = TargetInfo {
        session_start_utc_ns: NULL_I64,
        trace_start_ns: NULL_I64,
        trace_end_ns: NULL_I64,
        ..Default::default()
    };
    let t = "TARGET_INFO_GPU";
    if caps.has_table(t) && caps.has_column(t, "id") {
        let c = |name: &str| caps.column_or_null(t, name);
        let sql = format!(
            "SELECT {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {} FROM {t} ORDER BY {}",
            c("id"),
            c("name"),
            c("chipName"),
            c("busLocation"),
            c("uuid"),
            c("smCount"),
            c("totalMemory"),
            c("memoryBandwidth"),
            c("clockRate"),
            c("computeMajor"),
            c("computeMinor"),
            c("cuDevice"),
            c("id")
        );
        for_each_row(file, conn, &sql, |r| {
            info.gpus.push(GpuInfo {
                id: int_cell(r.get_ref(0)?),
                name: text_cell(r.get_ref(1)?),
                chip_name: text_cell(r.get_ref(2)?),
                bus_location: text_cell(r.get_ref(3)?),
                uuid: text_cell(r.get_ref(4)?),
                sm_count: int_cell(r.get_ref(5)?),
                total_memory: int_cell(r.get_ref(6)?),
                memory_bandwidth: int_cell(r.get_ref(7)?),
                clock_rate: int_cell(r.get_ref(8)?),
                compute_major: int_cell(r.get_ref(9)?),
                compute_minor: int_cell(r.get_ref(10)?),
                cuda_device: int_cell(r.get_ref(11)?),
            });
            Ok(())
        })?;
    }
    if caps.has_table("PROCESSES") && caps.has_column("PROCESSES", "pid") {
        let name = caps.column_or_null("PROCESSES", "name");
        for_each_row(file, conn, &format!("SELECT pid, {name} FROM PROCESSES"), |r| {
            info.processes.push((int_cell(r.get_ref(0)?), text_cell(r.get_ref(1)?)));
            Ok(())
        })?;
    }
    if caps.has_table("ThreadNames")
        && caps.has_column("ThreadNames", "globalTid")
        && caps.has_column("ThreadNames", "nameId")
    {
        for_each_row(file, conn, "SELECT globalTid, nameId FROM ThreadNames", |r| {
            let (pid, tid) = decode_global_id(int_cell(r.get_ref(0)?));
            let name = strings.get(int_cell(r.get_ref(1)?)).map(str::to_string);
            info.threads.push((pid, tid, name));
            Ok(())
        })?;
    }
    if caps.has_column("TARGET_INFO_SESSION_START_TIME", "utcEpochNs") {
        for_each_row(file, conn, "SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME LIMIT 1", |r| {
            info.session_start_utc_ns = int_cell(r.get_ref(0)?);
            Ok(())
        })?;
    }
    if caps.has_column("ANALYSIS_DETAILS", "startTime") && caps.has_column("ANALYSIS_DETAILS", "stopTime") {
        for_each_row(file, conn, "SELECT startTime, stopTime FROM ANALYSIS_DETAILS LIMIT 1", |r| {
            info.trace_start_ns = int_cell(r.get_ref(0)?);
            info.trace_end_ns = int_cell(r.get_ref(1)?);
            Ok(())
        })?;
    }
    if caps.has_column("ENUM_CUPTI_SYNC_TYPE", "id") && caps.has_column("ENUM_CUPTI_SYNC_TYPE", "name") {
        for_each_row(file, conn, "SELECT id, name FROM ENUM_CUPTI_SYNC_TYPE", |r| {
            let label = text_cell(r.get_ref(1)?).unwrap_or_default();
            let label = label.strip_prefix("CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_").unwrap_or(&label).to_string();
            info.sync_type_names.push((int_cell(r.get_ref(0)?), label));
            Ok(())
        })?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(shapes: Vec<KernelShape>, shape: Vec<u32>, correlation: Vec<u32>, wide: Vec<(u32, i64)>) -> Kernels {
        let n = shape.len();
        Kernels {
            start: (0..n as i64).collect(),
            end: (1..=n as i64).collect(),
            shape,
            correlation,
            wide_correlation: wide,
            shapes,
            ..Default::default()
        }
    }

    #[test]
    fn chunks_join_with_one_shape_list_and_correlations_survive() {
        let (a, b, c) = ([1; 16], [2; 16], [3; 16]);
        const WIDE: u32 = Correlations::WIDE;
        let first = part(vec![a, b], vec![0, 1, 0], vec![10, WIDE, 12], vec![(1, 1 << 40)]);
        // The second chunk saw b first: its local id 0 is the trace's id 1.
        let second = part(vec![b, c], vec![0, 1], vec![WIDE, 14], vec![(0, 1 << 41)]);
        let k = concat_kernels(vec![first, second], usize::MAX);
        assert_eq!(k.shapes, vec![a, b, c]);
        assert_eq!(k.shape, vec![0, 1, 0, 1, 2]);
        assert_eq!(k.start, vec![0, 1, 2, 0, 1]);
        let correlations: Vec<i64> = (0..k.len()).map(|i| k.correlation(i)).collect();
        assert_eq!(correlations, vec![10, 1 << 40, 12, 1 << 41, 14]);
        // Shapes a, b, c have pids 1, 2, 3 (every slot of a test shape holds its number).
        assert_eq!(k.device().get(4), 3);
        assert_eq!(k.launch(0), launch_key(1, 10));
        assert_eq!(k.launch(4), launch_key(3, 14));
    }
}
