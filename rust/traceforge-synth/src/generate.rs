//! The simulation and the SQLite writer.
//!
//! Each device is one process whose launching thread walks the fitted Markov chain. For every operation the
//! thread waits a fitted CPU gap, makes the launch's driver prelude calls and the launch call itself; the GPU
//! starts the work at the later of "API start + idle launch latency" and "stream free + queued gap", so the
//! trace is CPU-bound or GPU-bound exactly where the draws make it so, as in the real capture. A stream
//! synchronisation blocks the thread until its stream drains. Rows are inserted as they are produced, so
//! memory stays flat whatever the size.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{params, Connection, Statement};

use crate::model::{Dist, KernelSpec, Model, OpKind};
use crate::rng::Rng;
use crate::{SchemaVariant, SynthConfig, SynthError, SynthSummary};

/// `ANALYSIS_DETAILS.startTime` of the fitted capture: nsys session clocks start near half a second.
const SESSION_START_NS: i64 = 495_482_087;
/// The first request starts this long after the session starts (CUDA and model initialisation).
const WARMUP_NS: i64 = 1_000_000_000;
/// 2025-11-24T16:00:00Z, the UTC base of synthetic captures (a seed shifts it by whole seconds).
const UTC_BASE_S: i64 = 1_764_000_000;
/// `globalVid` of the capturing machine (`vmId` 1 shifted into place).
const GLOBAL_VID: i64 = 1 << 48;
/// The default stream id PyTorch's work lands on in the capture; extra streams are numbered from 13.
const DEFAULT_STREAM: i64 = 7;
const EXTRA_STREAM_BASE: i64 = 13;
/// CUPTI writes this for "no event" in synchronisation records.
const NO_EVENT: i64 = 4_294_967_295;
/// How many operations between polls of the cancel flag (a power of two).
const CANCEL_POLL: u64 = 4096;
/// With several devices, a tensor-parallel all-reduce follows a kernel with this probability.
const NCCL_PROBABILITY: f64 = 1.0 / 32.0;

fn sql_error(e: rusqlite::Error) -> SynthError {
    SynthError::Output { path: Default::default(), message: e.to_string() }
}

/// The NCCL all-reduce kernel of multi-device traces. Not fitted: the fitted capture ran on one GPU; its
/// name, geometry and a 6-60 us duration follow NCCL 2.2x ring/LL all-reduces of small activations.
fn nccl_kernel(model: &Model) -> Result<(KernelSpec, Dist), SynthError> {
    let coarse = model.ops.iter().find_map(|o| o.dur.as_ref()).map(|d| d.probs()).unwrap_or_default();
    let q: Vec<f64> = coarse.iter().map(|p| 6_000.0 + 54_000.0 * p * p).collect();
    let spec = KernelSpec {
        short: "ncclDevKernel_AllReduce_Sum_f16_RING_LL".into(),
        demangled: "ncclDevKernel_AllReduce_Sum_f16_RING_LL(ncclDevKernelArgsStorage<(unsigned long)4096>)".into(),
        mangled: Some("_Z39ncclDevKernel_AllReduce_Sum_f16_RING_LL24ncclDevKernelArgsStorageILm4096EE".into()),
        attrs: [96, 16, 1, 1, 512, 1, 1, 0, 0, 0, 0],
        shmem_executed: Some(0),
        launch_type: 1,
        cache_config: 1,
        limit_config: Some(0),
    };
    Ok((spec, Dist::new(std::sync::Arc::new(coarse), q)?))
}

/// The launch API of every kernel in nsys 2022.4 exports: CUDA 11 driver-API launches, as in the real
/// `cu11_driverapi_h200_nsys2022.4` export (no `cuKernelGetName`/`cuKernelGetAttribute` prelude: those
/// driver calls are CUDA 12's).
const DRIVER_LAUNCH: &str = "cuLaunchKernel";

/// The model as a CUDA 11 driver-API program issues it: every kernel-launching API becomes the driver's
/// `cuLaunchKernel` (its fitted call duration kept) and no call has a driver prelude. Indices are unchanged.
fn driver_launches(model: &Model) -> Model {
    let mut m = model.clone();
    let launching: Vec<usize> = m.ops.iter().filter(|o| matches!(o.kind, OpKind::Kernel(_))).map(|o| o.api).collect();
    for (i, api) in m.apis.iter_mut().enumerate() {
        if launching.contains(&i) || api.name.starts_with("cudaLaunchKernel") || api.name.starts_with("cuLaunchKernel")
        {
            api.name = DRIVER_LAUNCH.to_string();
            api.event_class = 1;
        }
        api.prelude.clear();
    }
    m
}

/// Interned `StringIds`.
pub(crate) struct Strings {
    ids: HashMap<String, i64>,
    order: Vec<String>,
}

impl Strings {
    fn new() -> Self {
        Strings { ids: HashMap::new(), order: Vec::new() }
    }
    pub(crate) fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.order.len() as i64 + 1;
        self.ids.insert(s.to_string(), i);
        self.order.push(s.to_string());
        i
    }
}

struct KernelIds {
    short: i64,
    demangled: i64,
    mangled: Option<i64>,
}

struct Writer<'c> {
    runtime: Statement<'c>,
    kernel: Statement<'c>,
    memcpy: Statement<'c>,
    memset: Statement<'c>,
    sync: Statement<'c>,
    nvtx: Statement<'c>,
    schema: SchemaVariant,
    summary: SynthSummary,
}

impl Writer<'_> {
    fn api(&mut self, start: i64, end: i64, class: i64, gtid: i64, corr: i64, name: i64) -> Result<(), SynthError> {
        self.summary.api_calls += 1;
        self.runtime.execute(params![start, end, class, gtid, corr, name]).map(|_| ()).map_err(sql_error)
    }
}

/// One device's process and its simulation state.
struct Device {
    index: i64,
    pid: i64,
    gpid: i64,
    gtid: i64,
    context: i64,
    streams: Vec<i64>,
    ready: Vec<i64>,
    last_stream: usize,
    t_cpu: i64,
    corr: i64,
    grid_id: i64,
    rng: Rng,
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn iso(epoch_s: i64) -> String {
    let (y, m, d) = civil(epoch_s.div_euclid(86_400));
    let s = epoch_s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub(crate) fn write(
    tmp: &Path,
    abs: &Path,
    cfg: &SynthConfig,
    cancel: &AtomicBool,
) -> Result<SynthSummary, SynthError> {
    let model = Model::load()?;
    let out_err = |e: rusqlite::Error| SynthError::Output { path: tmp.to_path_buf(), message: e.to_string() };
    let con = Connection::open(tmp).map_err(out_err)?;
    // Durability is pointless for a file that is renamed into place only once complete.
    con.execute_batch(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA locking_mode = EXCLUSIVE; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
    )
    .map_err(out_err)?;
    con.execute_batch(cfg.schema.schema_sql()).map_err(out_err)?;
    if crate::host::wanted(cfg) {
        con.execute_batch(crate::host::SCHEMA_2025_3_HOST).map_err(out_err)?;
    }
    con.execute_batch("BEGIN").map_err(out_err)?;
    con.execute_batch(cfg.schema.static_sql()).map_err(out_err)?;
    let summary = simulate(&con, &model, abs, cfg, cancel)?;
    con.execute_batch("COMMIT").map_err(out_err)?;
    con.close().map_err(|(_, e)| out_err(e))?;
    Ok(summary)
}

fn simulate(
    con: &Connection,
    model: &Model,
    abs: &Path,
    cfg: &SynthConfig,
    cancel: &AtomicBool,
) -> Result<SynthSummary, SynthError> {
    // Looked up before the 2022.4 renaming (which keeps indices).
    let nccl_api = model.api("cudaLaunchKernelExC_v11060").unwrap_or(0);
    let sync_api = model.api("cudaStreamSynchronize_v3020").unwrap_or(0);
    let driver_model;
    let model = match cfg.schema {
        SchemaVariant::Nsys2025_3 => model,
        SchemaVariant::Nsys2022_4 => {
            driver_model = driver_launches(model);
            &driver_model
        }
    };
    let v2022 = cfg.schema == SchemaVariant::Nsys2022_4;
    let mut strings = Strings::new();
    // 2022.4 never calls the prelude-only driver functions (CUDA 12's cuKernelGet*): leave them out of StringIds.
    let called = |i: usize| !v2022 || i == nccl_api || i == sync_api || model.ops.iter().any(|o| o.api == i);
    let api_ids: Vec<i64> =
        model.apis.iter().enumerate().map(|(i, a)| if called(i) { strings.id(&a.name) } else { 0 }).collect();
    let kernel_ids = |strings: &mut Strings, k: &KernelSpec| KernelIds {
        short: strings.id(&k.short),
        demangled: strings.id(&k.demangled),
        mangled: k.mangled.as_deref().map(|m| strings.id(m)),
    };
    let op_ids: Vec<Option<KernelIds>> = model
        .ops
        .iter()
        .map(|o| match &o.kind {
            OpKind::Kernel(k) => Some(kernel_ids(&mut strings, k)),
            _ => None,
        })
        .collect();
    let (nccl, nccl_dur) = nccl_kernel(model)?;
    let nccl_ids = kernel_ids(&mut strings, &nccl);
    let sync_type = model
        .ops
        .iter()
        .find_map(|o| match o.kind {
            OpKind::Sync { sync_type } => Some(sync_type),
            _ => None,
        })
        .unwrap_or(2);
    let thread_name = strings.id("python3");

    let mut w = Writer {
        runtime: con
            .prepare(
                "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, \
                 returnValue, callchainId) VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
            )
            .map_err(sql_error)?,
        // 2022.4 has no greenContextId (after contextId), MEMCPY.copyCount, SYNCHRONIZATION.deprecatedSyncType
        // nor SYNCHRONIZATION.eventSyncId.
        kernel: con
            .prepare(if v2022 {
                "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
                 ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
            } else {
                "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
                 ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
            })
            .map_err(sql_error)?,
        memcpy: con
            .prepare(if v2022 {
                "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, \
                 NULL, NULL, NULL, NULL, NULL, NULL)"
            } else {
                "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, \
                 NULL, NULL, NULL, NULL, NULL, NULL, 1)"
            })
            .map_err(sql_error)?,
        memset: con
            .prepare(if v2022 {
                "INSERT INTO CUPTI_ACTIVITY_KIND_MEMSET VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
            } else {
                "INSERT INTO CUPTI_ACTIVITY_KIND_MEMSET VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, NULL, ?)"
            })
            .map_err(sql_error)?,
        sync: con
            .prepare(if v2022 {
                "INSERT INTO CUPTI_ACTIVITY_KIND_SYNCHRONIZATION VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            } else {
                "INSERT INTO CUPTI_ACTIVITY_KIND_SYNCHRONIZATION VALUES (?, ?, ?, ?, NULL, ?, ?, ?, NULL, ?, ?, ?)"
            })
            .map_err(sql_error)?,
        nvtx: con
            .prepare(
                "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) VALUES (?, ?, 59, ?, ?, 0)",
            )
            .map_err(sql_error)?,
        schema: cfg.schema,
        summary: SynthSummary { start_ns: SESSION_START_NS, ..Default::default() },
    };

    let mut devices: Vec<Device> = (0..cfg.devices as i64)
        .map(|d| {
            let mut rng = Rng::new(cfg.seed, d as u64 + 1);
            let pid = 2_000 + 97 * d + (cfg.seed % 1_000) as i64;
            let tid = pid + 53;
            let gpid = GLOBAL_VID + (pid << 24);
            let streams: Vec<i64> = (0..cfg.streams as i64)
                .map(|s| if s == 0 { DEFAULT_STREAM } else { EXTRA_STREAM_BASE + s - 1 })
                .collect();
            let t_cpu = SESSION_START_NS + WARMUP_NS + rng.below(1_000_000) as i64;
            Device {
                index: d,
                pid,
                gpid,
                gtid: gpid + tid,
                context: d + 1,
                ready: vec![0; streams.len()],
                streams,
                last_stream: 0,
                t_cpu,
                corr: 100 + rng.below(1000) as i64,
                grid_id: 1,
                rng,
            }
        })
        .collect();

    let mut stop = 0i64;
    let mut ops_done = 0u64;
    for dev in devices.iter_mut() {
        let share = cfg.kernels / cfg.devices as u64 + u64::from((dev.index as u64) < cfg.kernels % cfg.devices as u64);
        let requests =
            cfg.requests.unwrap_or_else(|| (share as f64 / model.kernels_per_request).ceil() as u64).clamp(1, share);
        for r in 0..requests {
            let quota = share / requests + u64::from(r < share % requests);
            if r > 0 {
                dev.t_cpu += model.request_gap.draw(&mut dev.rng).max(0);
            }
            let req_start = dev.t_cpu;
            let mut state: Option<usize> = None;
            let mut emitted = 0u64;
            while emitted < quota {
                ops_done += 1;
                if ops_done & (CANCEL_POLL - 1) == 0 && cancel.load(Ordering::Relaxed) {
                    return Err(SynthError::Cancelled);
                }
                let i = model.step(state, &mut dev.rng);
                state = Some(i);
                let op = &model.ops[i];
                match &op.kind {
                    OpKind::Kernel(spec) => {
                        let (Some(ids), Some(dur)) = (op_ids[i].as_ref(), op.dur.as_ref()) else {
                            return Err(SynthError::Model(format!("kernel operation {i} lacks names or durations")));
                        };
                        launch_kernel(&mut w, model, dev, op.api, &api_ids, spec, ids, dur)?;
                        emitted += 1;
                        if cfg.devices > 1 && emitted < quota && dev.rng.uniform() < NCCL_PROBABILITY {
                            launch_kernel(&mut w, model, dev, nccl_api, &api_ids, &nccl, &nccl_ids, &nccl_dur)?;
                            emitted += 1;
                        }
                    }
                    OpKind::Memcpy { copy_kind, src_kind, dst_kind, bytes } => {
                        let dur = op
                            .dur
                            .as_ref()
                            .ok_or_else(|| SynthError::Model(format!("memcpy operation {i} lacks durations")))?;
                        let (start, end, corr, s, nbytes) =
                            launch_memop(&mut w, model, dev, op.api, &api_ids, bytes, dur)?;
                        w.summary.memcpys += 1;
                        w.memcpy
                            .execute(params![
                                start,
                                end,
                                dev.index,
                                dev.context,
                                dev.streams[s],
                                corr,
                                dev.gpid,
                                nbytes,
                                copy_kind,
                                src_kind,
                                dst_kind
                            ])
                            .map_err(sql_error)?;
                    }
                    OpKind::Memset { value, mem_kind, bytes } => {
                        let dur = op
                            .dur
                            .as_ref()
                            .ok_or_else(|| SynthError::Model(format!("memset operation {i} lacks durations")))?;
                        let (start, end, corr, s, nbytes) =
                            launch_memop(&mut w, model, dev, op.api, &api_ids, bytes, dur)?;
                        w.summary.memsets += 1;
                        w.memset
                            .execute(params![
                                start,
                                end,
                                dev.index,
                                dev.context,
                                dev.streams[s],
                                corr,
                                dev.gpid,
                                value,
                                nbytes,
                                mem_kind
                            ])
                            .map_err(sql_error)?;
                    }
                    OpKind::Sync { sync_type } => {
                        let s = dev.last_stream;
                        synchronize(&mut w, model, dev, op.api, &api_ids, s, *sync_type)?;
                    }
                }
            }
            // A request ends when its results are back on the host: drain every stream.
            for s in 0..dev.streams.len() {
                synchronize(&mut w, model, dev, sync_api, &api_ids, s, sync_type)?;
            }
            let text = format!("agent{}/req{}", dev.index, r);
            w.nvtx.execute(params![req_start, dev.t_cpu, text, dev.gtid]).map_err(sql_error)?;
            w.summary.nvtx_ranges += 1;
        }
        stop = stop.max(dev.t_cpu).max(dev.ready.iter().copied().max().unwrap_or(0));
    }
    if crate::host::wanted(cfg) {
        let processes: Vec<crate::host::Process> = devices
            .iter()
            .map(|d| crate::host::Process { device: d.index, pid: d.pid, gpid: d.gpid, gtid: d.gtid })
            .collect();
        let first = SESSION_START_NS + WARMUP_NS;
        crate::host::write(con, cfg, &mut strings, &processes, first, stop.max(first + 1), &mut w.summary, cancel)?;
    }
    let stop = stop + 100_000_000;
    w.summary.stop_ns = stop;

    let exec = |sql: &str, p: &[&dyn rusqlite::ToSql]| con.execute(sql, p).map(|_| ()).map_err(sql_error);
    for (i, s) in strings.order.iter().enumerate() {
        exec("INSERT INTO StringIds VALUES (?, ?)", &[&(i as i64 + 1), s])?;
    }
    let utc_s = UTC_BASE_S + (cfg.seed % 86_400) as i64;
    let utc = iso(utc_s);
    exec("INSERT INTO TARGET_INFO_SESSION_START_TIME VALUES (?, ?, ?)", &[&(utc_s * 1_000_000_000), &utc, &utc])?;
    exec(
        "INSERT INTO ANALYSIS_DETAILS VALUES (?, ?, ?, ?)",
        &[&GLOBAL_VID, &(stop - SESSION_START_NS), &SESSION_START_NS, &stop],
    )?;
    if !v2022 {
        exec(
            "UPDATE META_DATA_CAPTURE SET value = ? WHERE name = 'RUN_DURATION_MS'",
            &[&((stop - SESSION_START_NS) / 1_000_000).to_string()],
        )?;
    }
    for dev in &devices {
        exec("INSERT INTO PROCESSES VALUES (?, ?, 'python3')", &[&dev.gpid, &dev.pid])?;
        exec("INSERT INTO ThreadNames VALUES (?, 20, ?)", &[&thread_name, &dev.gtid])?;
        if v2022 {
            // 2022.4 has no TARGET_INFO_CUDA_DEVICE; a context's null stream is TARGET_INFO_CUDA_NULL_STREAM.
            exec(
                "INSERT INTO TARGET_INFO_CUDA_NULL_STREAM VALUES (?, 0, 1, ?, ?, ?)",
                &[&DEFAULT_STREAM, &dev.pid, &dev.index, &dev.context],
            )?;
        } else {
            exec("INSERT INTO TARGET_INFO_CUDA_DEVICE VALUES (?, ?, ?)", &[&dev.index, &dev.index, &dev.pid])?;
            exec(
                "INSERT INTO TARGET_INFO_CUDA_CONTEXT_INFO VALUES (?, 0, 1, ?, ?, ?, 0, 0)",
                &[&DEFAULT_STREAM, &dev.pid, &dev.index, &dev.context],
            )?;
        }
        for &s in &dev.streams {
            let flag: i64 = if s == DEFAULT_STREAM { 3 } else { 2 };
            exec(
                "INSERT INTO TARGET_INFO_CUDA_STREAM VALUES (?, 0, 1, ?, ?, 0, ?)",
                &[&s, &dev.pid, &dev.context, &flag],
            )?;
        }
        if dev.index > 0 {
            exec("INSERT INTO TARGET_INFO_GPU SELECT * FROM TARGET_INFO_GPU WHERE rowid = 1", &[])?;
        }
        let mut r = Rng::new(cfg.seed ^ 0x5EED, dev.index as u64 + 1000);
        let (a, b) = (r.next_u64(), r.next_u64());
        let uuid = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        exec(
            "UPDATE TARGET_INFO_GPU SET id = ?1, cuDevice = ?1, busLocation = ?2, uuid = ?3 WHERE rowid = ?4",
            &[&dev.index, &format!("0000:{:02x}:00.0", 6 + dev.index), &uuid, &(dev.index + 1)],
        )?;
    }
    let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".sqlite").unwrap_or(&name).to_string();
    let rep = format!("{stem}.nsys-rep");
    let abs_s = abs.to_string_lossy().into_owned();
    let abs_rep = abs.with_file_name(&rep).to_string_lossy().into_owned();
    let export_time = iso(utc_s + (stop - SESSION_START_NS) / 1_000_000_000 + 30);
    if v2022 {
        return export_meta_2022_4(con, &name, &rep, &abs_s, &abs_rep, &export_time, w.summary);
    }
    let meta: Vec<(&str, String)> = vec![
        ("EXPORT_PRODUCT_NAME", "NVIDIA Nsight Systems".into()),
        ("EXPORT_PRODUCT_VERSION", "2025.3.2.0".into()),
        ("EXPORT_PRODUCT_DATE", "2025.3".into()),
        ("EXPORT_SCHEMA_VERSION", "3.20.3".into()),
        ("EXPORT_SCHEMA_VERSION_MAJOR", "3".into()),
        ("EXPORT_SCHEMA_VERSION_MINOR", "20".into()),
        ("EXPORT_SCHEMA_VERSION_MICRO", "3".into()),
        ("EXPORT_SCHEMA_VERSION_CKSUM", "4021079525 170230".into()),
        ("EXPORT_PLATFORM", "linux-desktop".into()),
        ("EXPORT_ARCH", "x64".into()),
        ("EXPORT_TIME_UTC", export_time.clone()),
        ("EXPORT_TIME_LOCAL", format!("{export_time} +0000 UTC")),
        ("EXPORT_HOST", "traceforge-synth".into()),
        ("EXPORT_USER", String::new()),
        ("EXPORT_PARAM_INPUT_FILE", rep.clone()),
        ("EXPORT_PARAM_OUTPUT_FILE", name.clone()),
        ("EXPORT_PARAM_INPUT_PATH", rep),
        ("EXPORT_PARAM_OUTPUT_PATH", name),
        ("EXPORT_PARAM_INPUT_PATH_ABS", abs_rep),
        ("EXPORT_PARAM_OUTPUT_PATH_ABS", abs_s),
        ("EXPORT_PARAM_OVERWRITE", "true".into()),
        ("EXPORT_PARAM_APPEND", "false".into()),
        ("EXPORT_PARAM_LAZY", "true".into()),
        ("EXPORT_PARAM_TIME_NORMALIZE", "false".into()),
        ("EXPORT_PARAM_TIME_SHIFT", "0".into()),
        ("EXPORT_PARAM_TABLES_TO_EXPORT", String::new()),
        ("EXPORT_PARAM_TIMES_TO_EXPORT", String::new()),
        ("EXPORT_CONFIG_TIME_SHIFT", "0".into()),
        ("EXPORT_TIME", format!("{:.2} sec", w.summary.api_calls as f64 / 2.0e6)),
    ];
    for (k, v) in &meta {
        exec("INSERT INTO META_DATA_EXPORT VALUES (?, ?)", &[k, v])?;
    }
    Ok(w.summary)
}

/// `EXPORT_META_DATA` as nsys 2022.4.2 writes it: its keys, in its order (`OUTUPT` spelt as there).
fn export_meta_2022_4(
    con: &Connection,
    name: &str,
    rep: &str,
    abs_s: &str,
    abs_rep: &str,
    export_time: &str,
    summary: SynthSummary,
) -> Result<SynthSummary, SynthError> {
    let meta: Vec<(&str, String)> = vec![
        ("EXPORT_PRODUCT_NAME", "NVIDIA Nsight Systems".into()),
        ("EXPORT_PRODUCT_VERSION", "2022.4.2.1".into()),
        ("EXPORT_PRODUCT_DATE", "2022.4".into()),
        ("EXPORT_SCHEMA_VERSION", "3.0.0".into()),
        ("EXPORT_SCHEMA_VERSION_MAJOR", "3".into()),
        ("EXPORT_SCHEMA_VERSION_MINOR", "0".into()),
        ("EXPORT_SCHEMA_VERSION_MICRO", "0".into()),
        ("EXPORT_SCHEMA_VERSION_CKSUM", "4042420554 115894".into()),
        ("EXPORT_PLATFORM", "linux-desktop".into()),
        ("EXPORT_ARCH", "x64".into()),
        ("EXPORT_TIME", format!("{:.2}", summary.api_calls as f64 / 2.0e6)),
        ("EXPORT_TIME_UTC", export_time.into()),
        ("EXPORT_TIME_LOCAL", export_time.into()),
        ("EXPORT_HOST", "traceforge-synth".into()),
        ("EXPORT_USER", String::new()),
        ("EXPORT_INPUT_FILE", rep.into()),
        ("EXPORT_OUTUPT_FILE", name.into()),
        ("EXPORT_INPUT_PATH", rep.into()),
        ("EXPORT_OUTUPT_PATH", name.into()),
        ("EXPORT_INPUT_PATH_ABS", abs_rep.into()),
        ("EXPORT_OUTUPT_PATH_ABS", abs_s.into()),
        ("EXPORT_OVERWRITE", "true".into()),
        ("EXPORT_LAZY", "true".into()),
    ];
    let mut insert = con.prepare("INSERT INTO EXPORT_META_DATA VALUES (?, ?)").map_err(sql_error)?;
    for (k, v) in &meta {
        insert.execute(params![k, v]).map_err(sql_error)?;
    }
    Ok(summary)
}

/// GPU start of work issued by a call `[api_start, api_end)` onto stream `s`.
fn gpu_start(model: &Model, dev: &mut Device, s: usize, api_start: i64, api_end: i64) -> i64 {
    let idle = (api_end + model.idle_start_after_call.draw(&mut dev.rng)).max(api_start);
    let queued = dev.ready[s] + model.queued_gpu_gap.draw(&mut dev.rng).max(0);
    idle.max(queued)
}

/// The CPU side of an operation: gap, prelude calls, the issuing call. Returns (start, end, correlationId).
fn issue(
    w: &mut Writer<'_>,
    model: &Model,
    dev: &mut Device,
    api: usize,
    api_ids: &[i64],
) -> Result<(i64, i64, i64), SynthError> {
    let mut t = dev.t_cpu + model.cpu_gap.draw(&mut dev.rng).max(0);
    for &p in &model.apis[api].prelude {
        let d = model.apis[p].dur.draw(&mut dev.rng).max(1);
        w.api(t, t + d, model.apis[p].event_class, dev.gtid, dev.corr, api_ids[p])?;
        dev.corr += 1;
        t += d + model.prelude_gap.draw(&mut dev.rng).max(0);
    }
    let d = model.apis[api].dur.draw(&mut dev.rng).max(1);
    let corr = dev.corr;
    w.api(t, t + d, model.apis[api].event_class, dev.gtid, corr, api_ids[api])?;
    dev.corr += 1;
    dev.t_cpu = t + d;
    Ok((t, t + d, corr))
}

fn pick_stream(dev: &mut Device) -> usize {
    let s = if dev.streams.len() == 1 { 0 } else { dev.rng.below(dev.streams.len() as u64) as usize };
    dev.last_stream = s;
    s
}

#[allow(clippy::too_many_arguments)]
fn launch_kernel(
    w: &mut Writer<'_>,
    model: &Model,
    dev: &mut Device,
    api: usize,
    api_ids: &[i64],
    spec: &KernelSpec,
    ids: &KernelIds,
    dur: &Dist,
) -> Result<(), SynthError> {
    let (api_start, api_end, corr) = issue(w, model, dev, api, api_ids)?;
    let s = pick_stream(dev);
    let start = gpu_start(model, dev, s, api_start, api_end);
    let end = start + dur.draw(&mut dev.rng).max(1);
    dev.ready[s] = end;
    let a = &spec.attrs;
    w.summary.kernels += 1;
    w.kernel
        .execute(params![
            start,
            end,
            dev.index,
            dev.context,
            dev.streams[s],
            corr,
            dev.gpid,
            ids.demangled,
            ids.short,
            ids.mangled,
            spec.launch_type,
            spec.cache_config,
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            dev.grid_id,
            spec.shmem_executed,
            spec.limit_config,
        ])
        .map_err(sql_error)?;
    dev.grid_id += 1;
    Ok(())
}

/// A memcpy or memset: returns (start, end, correlationId, stream index, bytes).
fn launch_memop(
    w: &mut Writer<'_>,
    model: &Model,
    dev: &mut Device,
    api: usize,
    api_ids: &[i64],
    bytes: &Dist,
    dur: &Dist,
) -> Result<(i64, i64, i64, usize, i64), SynthError> {
    let (api_start, api_end, corr) = issue(w, model, dev, api, api_ids)?;
    let s = pick_stream(dev);
    let start = gpu_start(model, dev, s, api_start, api_end);
    // One draw for both: larger copies take longer, as in the capture.
    let u = dev.rng.uniform();
    let nbytes = (bytes.at(u).round() as i64).max(1);
    let end = start + (dur.at(u).round() as i64).max(1);
    dev.ready[s] = end;
    Ok((start, end, corr, s, nbytes))
}

fn synchronize(
    w: &mut Writer<'_>,
    model: &Model,
    dev: &mut Device,
    api: usize,
    api_ids: &[i64],
    s: usize,
    sync_type: i64,
) -> Result<(), SynthError> {
    let start = dev.t_cpu + model.cpu_gap.draw(&mut dev.rng).max(0);
    let end = start.max(dev.ready[s]) + model.sync_tail.draw(&mut dev.rng).max(1);
    let corr = dev.corr;
    dev.corr += 1;
    w.api(start, end, model.apis[api].event_class, dev.gtid, corr, api_ids[api])?;
    let rec_start = (start + model.sync_lead.draw(&mut dev.rng).max(0)).min(end);
    let rec_end = (end - 150).max(rec_start);
    w.summary.syncs += 1;
    let done = match w.schema {
        SchemaVariant::Nsys2025_3 => w.sync.execute(params![
            rec_start,
            rec_end,
            dev.index,
            dev.context,
            dev.streams[s],
            corr,
            dev.gpid,
            sync_type,
            NO_EVENT,
            NO_EVENT
        ]),
        SchemaVariant::Nsys2022_4 => w.sync.execute(params![
            rec_start,
            rec_end,
            dev.index,
            dev.context,
            dev.streams[s],
            corr,
            dev.gpid,
            sync_type,
            NO_EVENT
        ]),
    };
    done.map_err(sql_error)?;
    dev.t_cpu = end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00");
        assert_eq!(iso(UTC_BASE_S), "2025-11-24T16:00:00");
        assert_eq!(iso(951_782_400), "2000-02-29T00:00:00");
    }
}
