//! Binding of the synthetic export generator (`traceforge-synth`).
//!
//! The generator runs on a worker thread; the calling thread waits without the GIL and wakes every 100 ms
//! to let Python handle signals, so Ctrl-C stops a long generation (the partial file is removed) instead of waiting
//! for it.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use traceforge_synth::{SchemaVariant, SynthConfig, SynthError, SynthSummary};

/// The `traceforge.synth` exception for a generator error.
fn to_py_err(py: Python<'_>, err: SynthError) -> PyErr {
    let (class, message, path) = match &err {
        SynthError::InvalidArgument { .. } => ("SynthArgumentError", err.to_string(), None),
        SynthError::Output { path, message } => {
            ("SynthOutputError", format!("cannot write the export: {message}"), Some(path.display().to_string()))
        }
        SynthError::Exists { path } => (
            "SynthExistsError",
            "already exists (use --force-overwrite / overwrite=True to replace it)".to_string(),
            Some(path.display().to_string()),
        ),
        SynthError::Cancelled => ("SynthInterrupted", err.to_string(), None),
        SynthError::Model(_) => ("TraceforgeError", err.to_string(), None),
    };
    let build = || -> PyResult<PyErr> {
        let module = py.import("traceforge.synth")?;
        let cls = module.getattr(class)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("path", path.clone())?;
        Ok(PyErr::from_value(cls.call((message.clone(),), Some(&kwargs))?))
    };
    build().unwrap_or_else(|e| e)
}

fn summary_dict<'py>(py: Python<'py>, s: &SynthSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kernels", s.kernels)?;
    d.set_item("memcpys", s.memcpys)?;
    d.set_item("memsets", s.memsets)?;
    d.set_item("syncs", s.syncs)?;
    d.set_item("api_calls", s.api_calls)?;
    d.set_item("nvtx_ranges", s.nvtx_ranges)?;
    d.set_item("gil_ranges", s.gil_ranges)?;
    d.set_item("osrt_calls", s.osrt_calls)?;
    d.set_item("gpu_metric_samples", s.gpu_metric_samples)?;
    d.set_item("start_ns", s.start_ns)?;
    d.set_item("stop_ns", s.stop_ns)?;
    Ok(d)
}

/// Write a synthetic nsys 2025.3 (or 2022.4) export; returns its row counts. See `traceforge.synth.synthesize`.
#[pyfunction]
#[pyo3(signature = (
    out, kernels, devices, streams, seed, requests=None, overwrite=false, nsys_version="2025.3",
    nvtx_ranges=0, gil_threads=0, gpu_metrics_hz=0, osrt_calls=0
))]
#[allow(clippy::too_many_arguments)]
fn synthesize<'py>(
    py: Python<'py>,
    out: PathBuf,
    kernels: u64,
    devices: u32,
    streams: u32,
    seed: u64,
    requests: Option<u64>,
    overwrite: bool,
    nsys_version: &str,
    nvtx_ranges: u64,
    gil_threads: u32,
    gpu_metrics_hz: u32,
    osrt_calls: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let schema = SchemaVariant::parse(nsys_version).map_err(|e| to_py_err(py, e))?;
    let cfg = SynthConfig {
        kernels,
        devices,
        streams,
        seed,
        requests,
        overwrite,
        schema,
        nvtx_ranges,
        gil_threads,
        gpu_metrics_hz,
        osrt_calls,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let worker = {
        let cancel = Arc::clone(&cancel);
        std::thread::spawn(move || traceforge_synth::synthesize(&out, &cfg, &cancel))
    };
    let wait = |worker: &std::thread::JoinHandle<_>| {
        let deadline = Instant::now() + Duration::from_millis(100);
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    loop {
        py.allow_threads(|| wait(&worker));
        if worker.is_finished() {
            break;
        }
        if let Err(signal) = py.check_signals() {
            cancel.store(true, Ordering::Relaxed);
            // The worker notices within one batch and removes its partial file.
            let _ = py.allow_threads(|| worker.join());
            return Err(signal);
        }
    }
    match worker.join() {
        Ok(Ok(summary)) => summary_dict(py, &summary),
        Ok(Err(e)) => Err(to_py_err(py, e)),
        Err(_) => Err(to_py_err(py, SynthError::Model("internal error in the generator (please report)".into()))),
    }
}

/// Add the generator's functions to `traceforge._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(synthesize, m)?)?;
    m.add("SYNTH_SCHEMA_2025_3", traceforge_synth::SCHEMA_2025_3)?;
    Ok(())
}
