//! Synthetic nsys exports: the schema nsys 2025.3 (or 2022.4) writes, with distributions fitted to a real capture.
//!
//! [`synthesize`] writes a SQLite file with exactly the tables, columns, types and column order of an
//! nsys 2025.3.2 export (schema 3.20.3; the `CREATE TABLE` statements are copied from a real export into
//! `data/schema_2025_3.sql`), filled by simulating the launching thread of a PyTorch LLM decode loop: a Markov
//! chain over kernels, memcpys, memsets and stream synchronisations, with every duration and gap drawn
//! from empirical distributions fitted to the `llama1b_n1_h100_nsys2025.3` capture (`scripts/fit_synth.py`).
//! Output is deterministic for a seed, written to a temporary file in one transaction with prepared
//! statements and no indexes, and renamed into place only when complete.
//!
//! [`SchemaVariant::Nsys2022_4`] writes the same simulated events in the layout of nsys 2022.4.2 (schema
//! 3.0.0, copied from the real `cu11_driverapi_h200_nsys2022.4` export into `data/schema_2022_4.sql`), with
//! every kernel launched through the driver API `cuLaunchKernel` as in that export.

pub mod error;
mod generate;
mod host;
pub mod model;
pub mod rng;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub use error::SynthError;
pub use host::{MAX_GIL_THREADS, MAX_GPU_METRICS_HZ, SCHEMA_2025_3_HOST};

/// The `CREATE TABLE` statements of a real nsys 2025.3.2 export, in `sqlite_master` order.
pub const SCHEMA_2025_3: &str = include_str!("../data/schema_2025_3.sql");
/// Enum tables, capture metadata and the GPU template row of the same export.
pub const STATIC_2025_3: &str = include_str!("../data/static_2025_3.sql");
/// The `CREATE TABLE` statements of a real nsys 2022.4.2 export (schema 3.0.0), in `sqlite_master` order.
pub const SCHEMA_2022_4: &str = include_str!("../data/schema_2022_4.sql");
/// Enum tables, `TARGET_INFO_SYSTEM_ENV` and the H200 GPU template row of the same export.
pub const STATIC_2022_4: &str = include_str!("../data/static_2022_4.sql");

/// Which nsys export layout the generator writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SchemaVariant {
    /// nsys 2025.3.2 (schema 3.20.3): `META_DATA_EXPORT`, `META_DATA_CAPTURE`, `greenContextId` columns;
    /// kernels launched through the runtime (`cudaLaunchKernel`) and driver (`cuLaunchKernelEx`) APIs.
    #[default]
    Nsys2025_3,
    /// nsys 2022.4.2 (schema 3.0.0): `EXPORT_META_DATA`, `TARGET_INFO_CUDA_NULL_STREAM`, older column sets,
    /// the H200 of the real 2022.4 export; every kernel launched through the driver API `cuLaunchKernel`.
    Nsys2022_4,
}

impl SchemaVariant {
    /// Every variant, oldest first.
    pub const ALL: [SchemaVariant; 2] = [SchemaVariant::Nsys2022_4, SchemaVariant::Nsys2025_3];

    /// The nsys version it imitates (`"2025.3"`, `"2022.4"`).
    pub fn version(self) -> &'static str {
        match self {
            SchemaVariant::Nsys2025_3 => "2025.3",
            SchemaVariant::Nsys2022_4 => "2022.4",
        }
    }

    /// The variant of an nsys version string (`"2022.4"`, `"2025.3"`; `"2022.4.2"` etc. are accepted too).
    pub fn parse(version: &str) -> Result<SchemaVariant, SynthError> {
        let v = version.trim();
        SchemaVariant::ALL
            .into_iter()
            .find(|s| v == s.version() || v.strip_prefix(s.version()).is_some_and(|rest| rest.starts_with('.')))
            .ok_or_else(|| invalid("nsys_version", format!("{version:?} is not one of 2022.4, 2025.3")))
    }

    /// The `CREATE TABLE` statements written (copied verbatim from a real export of that version).
    pub fn schema_sql(self) -> &'static str {
        match self {
            SchemaVariant::Nsys2025_3 => SCHEMA_2025_3,
            SchemaVariant::Nsys2022_4 => SCHEMA_2022_4,
        }
    }

    /// The static rows written (enum tables, system/capture metadata, the GPU template row).
    pub fn static_sql(self) -> &'static str {
        match self {
            SchemaVariant::Nsys2025_3 => STATIC_2025_3,
            SchemaVariant::Nsys2022_4 => STATIC_2022_4,
        }
    }

    /// `EXPORT_SCHEMA_VERSION` of the export.
    pub fn schema_version(self) -> &'static str {
        match self {
            SchemaVariant::Nsys2025_3 => "3.20.3",
            SchemaVariant::Nsys2022_4 => "3.0.0",
        }
    }
}

/// Most kernels one call may generate (about 4 TB of export).
pub const MAX_KERNELS: u64 = 1 << 34;
/// Most devices (one process each).
pub const MAX_DEVICES: u32 = 64;
/// Most streams per device.
pub const MAX_STREAMS: u32 = 256;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Total kernels over all devices (at least one per device).
    pub kernels: u64,
    /// GPUs; each is driven by its own process with one launching thread.
    pub devices: u32,
    /// CUDA streams per device that kernels are spread over.
    pub streams: u32,
    /// Seed: the same configuration and seed give the same file.
    pub seed: u64,
    /// NVTX request ranges per device (None: one per ~45,800 kernels, as in the fitted capture).
    pub requests: Option<u64>,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// The nsys export layout to write (default: 2025.3).
    pub schema: SchemaVariant,
    /// NVTX push/pop ranges besides the request ranges: the user's ranges (nested two deep on the launching
    /// threads), or with `gil_threads` the GIL ranges of `nsys -t python-gil` spread over those threads.
    pub nvtx_ranges: u64,
    /// Python threads of the first process whose GIL ranges (and OS calls) are traced (0: none).
    pub gil_threads: u32,
    /// GPU metric samples per second of each of the 22 metrics of each device (0: no `GPU_METRICS`).
    pub gpu_metrics_hz: u32,
    /// OS runtime calls (`OSRT_API`), spread over the GIL threads (else the launching threads).
    pub osrt_calls: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            kernels: 10_000,
            devices: 1,
            streams: 1,
            seed: 0,
            requests: None,
            overwrite: false,
            schema: SchemaVariant::default(),
            nvtx_ranges: 0,
            gil_threads: 0,
            gpu_metrics_hz: 0,
            osrt_calls: 0,
        }
    }
}

/// Row counts and time range of a generated export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthSummary {
    /// `CUPTI_ACTIVITY_KIND_KERNEL` rows.
    pub kernels: u64,
    /// `CUPTI_ACTIVITY_KIND_MEMCPY` rows.
    pub memcpys: u64,
    /// `CUPTI_ACTIVITY_KIND_MEMSET` rows.
    pub memsets: u64,
    /// `CUPTI_ACTIVITY_KIND_SYNCHRONIZATION` rows.
    pub syncs: u64,
    /// `CUPTI_ACTIVITY_KIND_RUNTIME` rows (runtime and driver calls).
    pub api_calls: u64,
    /// The user's NVTX ranges (`NVTX_EVENTS` rows outside the GIL domain).
    pub nvtx_ranges: u64,
    /// GIL ranges (`NVTX_EVENTS` rows of the `GIL Trace` domain, its create event aside).
    pub gil_ranges: u64,
    /// `OSRT_API` rows.
    pub osrt_calls: u64,
    /// `GPU_METRICS` rows.
    pub gpu_metric_samples: u64,
    /// `ANALYSIS_DETAILS.startTime`.
    pub start_ns: i64,
    /// `ANALYSIS_DETAILS.stopTime`.
    pub stop_ns: i64,
}

fn invalid(field: &'static str, message: String) -> SynthError {
    SynthError::InvalidArgument { field, message }
}

/// Check a configuration without writing anything.
pub fn validate(cfg: &SynthConfig) -> Result<(), SynthError> {
    if cfg.devices == 0 || cfg.devices > MAX_DEVICES {
        return Err(invalid("devices", format!("{} is not in 1..={MAX_DEVICES}", cfg.devices)));
    }
    if cfg.streams == 0 || cfg.streams > MAX_STREAMS {
        return Err(invalid("streams", format!("{} is not in 1..={MAX_STREAMS}", cfg.streams)));
    }
    if cfg.kernels < cfg.devices as u64 || cfg.kernels > MAX_KERNELS {
        return Err(invalid(
            "kernels",
            format!("{} is not in {}..={MAX_KERNELS} (at least one per device)", cfg.kernels, cfg.devices),
        ));
    }
    if cfg.gil_threads > MAX_GIL_THREADS {
        return Err(invalid("gil_threads", format!("{} is not in 0..={MAX_GIL_THREADS}", cfg.gil_threads)));
    }
    if cfg.gpu_metrics_hz > MAX_GPU_METRICS_HZ {
        return Err(invalid("gpu_metrics_hz", format!("{} is not in 0..={MAX_GPU_METRICS_HZ}", cfg.gpu_metrics_hz)));
    }
    if cfg.gil_threads > 0 && cfg.nvtx_ranges == 0 {
        return Err(invalid("nvtx_ranges", "0: GIL threads need GIL ranges (give nvtx_ranges)".into()));
    }
    if host::wanted(cfg) && cfg.schema != SchemaVariant::Nsys2025_3 {
        return Err(invalid(
            "nsys_version",
            format!(
                "{}: NVTX, GIL, OS runtime and GPU metric rows are written in the 2025.3 layout only",
                cfg.schema.version()
            ),
        ));
    }
    if let Some(r) = cfg.requests {
        let per_device = cfg.kernels / cfg.devices as u64;
        if r == 0 || r > per_device {
            return Err(invalid("requests", format!("{r} is not in 1..={per_device} (kernels per device)")));
        }
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn output_error(path: &Path, message: impl ToString) -> SynthError {
    SynthError::Output { path: path.to_path_buf(), message: message.to_string() }
}

/// Write a synthetic export to `path`; `cancel` is polled between batches (set it to stop early).
///
/// Nothing is left at `path` (nor beside it) unless the whole file was written.
pub fn synthesize(path: &Path, cfg: &SynthConfig, cancel: &AtomicBool) -> Result<SynthSummary, SynthError> {
    validate(cfg)?;
    if path.as_os_str().is_empty() {
        return Err(output_error(path, "empty output path"));
    }
    if path.is_dir() {
        return Err(output_error(path, "is a directory"));
    }
    if path.exists() && !cfg.overwrite {
        return Err(SynthError::Exists { path: path.to_path_buf() });
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(output_error(path, format!("directory {} does not exist", parent.display())));
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let result = generate::write(&tmp, &abs, cfg, cancel).and_then(|summary| {
        std::fs::rename(&tmp, path).map_err(|e| output_error(path, e))?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| match e {
        SynthError::Output { message, .. } => output_error(path, message),
        other => other,
    })
}
