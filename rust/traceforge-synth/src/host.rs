//! Host-side tables of a synthetic export: NVTX ranges beyond the request ranges, Python GIL ranges
//! (`nsys -t python-gil`), OS runtime calls (`-t osrt`) and GPU metric samples (`--gpu-metrics-devices`).
//!
//! The tables are the real 2025.3 ones (`data/schema_2025_3_host.sql`, copied from the shared GIL/OSRT and
//! GPU-metric captures), created only when a host flag asks for them, and filled the way those captures
//! fill them: GIL ranges are push/pop ranges labelled `Holding GIL` / `Waiting for GIL` (interned) in a
//! domain named `GIL Trace`, created once per process; OS calls are `eventClass` 27 rows named after the
//! calls of the GIL capture, with their mean durations; GPU metrics are the 22 metrics of an H200 at a fixed
//! rate, keyed by `typeId` (device in its low byte) and `metricId`. Each thread's ranges and calls follow one
//! another without overlapping, spread over the simulated capture; rows are written in rough time order.
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{params, Connection};

use crate::generate::Strings;
use crate::rng::Rng;
use crate::{SynthConfig, SynthError, SynthSummary};

/// `CREATE TABLE` statements of the host-side tables, copied from real nsys 2025.3.2 exports.
pub const SCHEMA_2025_3_HOST: &str = include_str!("../data/schema_2025_3_host.sql");

/// NVTX event types (`ENUM_NSYS_EVENT_TYPE`).
const NVTX_PUSH_POP: i64 = 59;
const NVTX_DOMAIN_CREATE: i64 = 75;
/// The colour nsys gives GIL ranges in the real capture.
const GIL_COLOR: i64 = 4_279_340_612;
/// `OSRT_API.eventClass` of a real call.
const OSRT_CALL: i64 = 27;
/// `typeId` of the first GPU's metrics in the real capture (`& 0xFF` is the device).
const METRIC_TYPE_BASE: i64 = 281_479_271_677_952;

/// The metrics of the real H200 capture, in `metricId` order, with a base value and a spread.
const METRICS: [(&str, i64, i64); 22] = [
    ("GPC Clock Frequency [MHz]", 1_755, 225),
    ("SYS Clock Frequency [MHz]", 1_755, 0),
    ("GR Active [Throughput %]", 0, 100),
    ("SMs Active [Throughput %]", 0, 100),
    ("SM Issue [Throughput %]", 0, 60),
    ("Tensor Active [Throughput %]", 0, 80),
    ("Vertex/Tess/Geometry Warps in Flight [Throughput %]", 0, 0),
    ("Vertex/Tess/Geometry Warps in Flight [Avg]", 0, 0),
    ("Vertex/Tess/Geometry Warps in Flight [Avg Warps per Cycle]", 0, 0),
    ("Pixel Warps in Flight [Throughput %]", 0, 0),
    ("Pixel Warps in Flight [Avg]", 0, 0),
    ("Pixel Warps in Flight [Avg Warps per Cycle]", 0, 0),
    ("Compute Warps in Flight [Throughput %]", 0, 70),
    ("Compute Warps in Flight [Avg]", 0, 4_000),
    ("Compute Warps in Flight [Avg Warps per Cycle]", 0, 30),
    ("Unallocated Warps in Active SMs [Throughput %]", 0, 90),
    ("Unallocated Warps in Active SMs [Avg]", 0, 6_000),
    ("Unallocated Warps in Active SMs [Avg Warps per Cycle]", 0, 40),
    ("DRAM Read Bandwidth [Throughput %]", 0, 90),
    ("DRAM Write Bandwidth [Throughput %]", 0, 40),
    ("PCIe RX Throughput [Throughput %]", 0, 10),
    ("PCIe TX Throughput [Throughput %]", 0, 10),
];

/// The most frequent OS calls of the real GIL capture, with their share of calls (per mille) and mean
/// duration (ns).
const OS_CALLS: [(&str, u64, i64); 8] = [
    ("stat64", 440, 1_840),
    ("pthread_cond_signal", 180, 2_231),
    ("open64", 103, 2_878),
    ("read", 75, 5_551),
    ("pthread_mutex_lock", 64, 56_791),
    ("munmap", 56, 2_492),
    ("mmap64", 31, 3_391),
    ("close", 51, 1_625),
];

/// Most GIL threads.
pub const MAX_GIL_THREADS: u32 = 1024;
/// Highest GPU metric sampling rate (Hz).
pub const MAX_GPU_METRICS_HZ: u32 = 200_000;

/// Whether any host-side table is asked for.
pub fn wanted(cfg: &SynthConfig) -> bool {
    cfg.nvtx_ranges > 0 || cfg.gil_threads > 0 || cfg.gpu_metrics_hz > 0 || cfg.osrt_calls > 0
}

/// A simulated process: (device index, pid, globalPid, globalTid of its launching thread).
pub(crate) struct Process {
    pub device: i64,
    pub pid: i64,
    pub gpid: i64,
    pub gtid: i64,
}

fn sql_error(e: rusqlite::Error) -> SynthError {
    SynthError::Output { path: Default::default(), message: e.to_string() }
}

/// `n` items over `parts` parts: the share of part `i`.
fn share(n: u64, parts: u64, i: u64) -> u64 {
    n / parts + u64::from(i < n % parts)
}

/// Write the host-side rows over the capture `[first, last)`; names are interned in `strings`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    con: &Connection,
    cfg: &SynthConfig,
    strings: &mut Strings,
    processes: &[Process],
    first: i64,
    last: i64,
    summary: &mut SynthSummary,
    cancel: &AtomicBool,
) -> Result<(), SynthError> {
    let mut rows = 0u64;
    let mut poll = || {
        rows += 1;
        if rows.is_multiple_of(4096) && cancel.load(Ordering::Relaxed) {
            return Err(SynthError::Cancelled);
        }
        Ok(())
    };
    let span = (last - first).max(1);
    let mut rng = Rng::new(cfg.seed ^ 0x4057, 7);
    // The threads: the GIL threads of the first process (its launching thread first), else every process's
    // launching thread.
    let threads: Vec<i64> = if cfg.gil_threads > 0 {
        let p = &processes[0];
        (0..i64::from(cfg.gil_threads)).map(|i| if i == 0 { p.gtid } else { p.gpid + p.pid + 100 + i }).collect()
    } else {
        processes.iter().map(|p| p.gtid).collect()
    };
    let thread_name = strings.id("python3");
    for &t in threads.iter().skip(1) {
        con.execute("INSERT INTO ThreadNames VALUES (?, 20, ?)", params![thread_name, t]).map_err(sql_error)?;
    }
    if cfg.nvtx_ranges > 0 {
        let mut nvtx = con
            .prepare(
                "INSERT INTO NVTX_EVENTS (start, end, eventType, color, text, globalTid, textId, domainId) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .map_err(sql_error)?;
        if cfg.gil_threads > 0 {
            let p = &processes[0];
            nvtx.execute(params![
                first - 1_000,
                None::<i64>,
                NVTX_DOMAIN_CREATE,
                None::<i64>,
                "GIL Trace",
                p.gtid,
                None::<i64>,
                1
            ])
            .map_err(sql_error)?;
            let (hold, wait) = (strings.id("Holding GIL"), strings.id("Waiting for GIL"));
            let t = threads.len() as u64;
            let counts: Vec<u64> = (0..t).map(|i| share(cfg.nvtx_ranges, t, i)).collect();
            let most = counts[0];
            // Slot k of every thread in turn: rows come in rough time order, as nsys writes them.
            for k in 0..most {
                for (i, &gtid) in threads.iter().enumerate() {
                    if k >= counts[i] {
                        continue;
                    }
                    let slot = span / counts[i] as i64;
                    let s = first + k as i64 * slot + (rng.below(slot.max(1) as u64 / 10 + 1)) as i64;
                    let e = s + 1 + (slot * 7 / 10).max(1) * (50 + rng.below(50) as i64) / 100;
                    let text = if rng.below(25) == 0 { wait } else { hold };
                    nvtx.execute(params![s, e, NVTX_PUSH_POP, GIL_COLOR, None::<String>, gtid, text, 1])
                        .map_err(sql_error)?;
                    poll()?;
                }
            }
            summary.gil_ranges += cfg.nvtx_ranges;
        } else {
            // The user's ranges, nested two deep on each launching thread: "step" around "layer.N".
            for (i, p) in processes.iter().enumerate() {
                let n = share(cfg.nvtx_ranges, processes.len() as u64, i as u64);
                let pairs = n.div_ceil(2).max(1);
                let slot = span / pairs as i64;
                for k in 0..n {
                    let base = first + (k / 2) as i64 * slot;
                    let (s, e, text) = if k % 2 == 0 {
                        (base, base + (slot * 9 / 10).max(2), "step".to_string())
                    } else {
                        (base + slot / 10, base + (slot * 6 / 10).max(1), format!("layer.{}", k / 2 % 32))
                    };
                    nvtx.execute(params![s, e.max(s + 1), NVTX_PUSH_POP, None::<i64>, text, p.gtid, None::<i64>, 0])
                        .map_err(sql_error)?;
                    poll()?;
                }
            }
            summary.nvtx_ranges += cfg.nvtx_ranges;
        }
    }
    if cfg.osrt_calls > 0 {
        let names: Vec<i64> = OS_CALLS.iter().map(|c| strings.id(c.0)).collect();
        let mut os = con
            .prepare(
                "INSERT INTO OSRT_API (start, end, eventClass, globalTid, nameId, returnValue, nestingLevel, \
                 callchainId) VALUES (?, ?, ?, ?, ?, 0, 0, 0)",
            )
            .map_err(sql_error)?;
        let t = threads.len() as u64;
        let counts: Vec<u64> = (0..t).map(|i| share(cfg.osrt_calls, t, i)).collect();
        for k in 0..counts[0] {
            for (i, &gtid) in threads.iter().enumerate() {
                if k >= counts[i] {
                    continue;
                }
                let slot = span / counts[i] as i64;
                let mut pick = rng.below(1000);
                let c = OS_CALLS
                    .iter()
                    .position(|c| {
                        pick < c.1 || {
                            pick -= c.1;
                            false
                        }
                    })
                    .unwrap_or(0);
                let dur = (OS_CALLS[c].2 * (50 + rng.below(100) as i64) / 100).clamp(1, (slot / 2).max(1));
                let s = first + k as i64 * slot + rng.below((slot - dur).max(1) as u64) as i64;
                os.execute(params![s, s + dur, OSRT_CALL, gtid, names[c]]).map_err(sql_error)?;
                poll()?;
            }
        }
        summary.osrt_calls += cfg.osrt_calls;
    }
    if cfg.gpu_metrics_hz > 0 {
        let source_name = strings.id("GpuMetrics");
        let type_name = strings.id("");
        for p in processes {
            let type_id = METRIC_TYPE_BASE + p.device;
            con.execute(
                "INSERT INTO GENERIC_EVENT_SOURCES (sourceId, nameId, timeSourceId, sourceGroupId) VALUES (?, ?, 3, 0)",
                params![type_id, source_name],
            )
            .map_err(sql_error)?;
            con.execute(
                "INSERT INTO GENERIC_EVENT_TYPES (typeId, sourceId, nameId) VALUES (?, ?, ?)",
                params![type_id, type_id, type_name],
            )
            .map_err(sql_error)?;
            for (m, metric) in METRICS.iter().enumerate() {
                con.execute(
                    "INSERT INTO TARGET_INFO_GPU_METRICS VALUES (?, ?, '', ?, ?)",
                    params![type_id, type_id, m as i64, metric.0],
                )
                .map_err(sql_error)?;
            }
        }
        let mut sample = con.prepare("INSERT INTO GPU_METRICS VALUES (?, ?, ?, ?, ?)").map_err(sql_error)?;
        let period = (1_000_000_000 / i64::from(cfg.gpu_metrics_hz)).max(1);
        let mut ts = first;
        while ts < last {
            for p in processes {
                let type_id = METRIC_TYPE_BASE + p.device;
                for (m, metric) in METRICS.iter().enumerate() {
                    let value = metric.1 + if metric.2 > 0 { rng.below(metric.2 as u64 + 1) as i64 } else { 0 };
                    sample.execute(params![ts, ts, type_id, m as i64, value]).map_err(sql_error)?;
                }
                summary.gpu_metric_samples += METRICS.len() as u64;
                poll()?;
            }
            ts += period;
        }
    }
    Ok(())
}
