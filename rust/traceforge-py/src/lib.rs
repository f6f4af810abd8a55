//! `traceforge._core`: the PyO3 binding of traceforge-core.
//!
//! It only converts arguments, releases the GIL around native work and maps core errors to the Python
//! exception tree of `traceforge.errors`; every algorithm lives in `traceforge-core`.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use traceforge_core::error::{Error, ERROR_CODES};
use traceforge_core::ingest::{Tables, Trace};
use traceforge_core::options::IngestOptions;

mod arrow_stream;
mod derive;
mod synth;
mod timeline;

pub use arrow_stream::{ArrowStream, StreamFailure};

/// Convert a core error into the matching `traceforge.errors` exception: the class comes from
/// `traceforge.errors.class_for_code`, the one table of codes and classes.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    let (path, message) = err.parts();
    error_of(err.code(), path.map(|p| p.display().to_string()), message)
}

/// The `traceforge.errors` exception of a core error's code, path and message.
fn error_of(code: &str, path: Option<String>, message: String) -> PyErr {
    Python::with_gil(|py| {
        let build = || -> PyResult<PyErr> {
            let module = py.import("traceforge.errors")?;
            let class = module.call_method1("class_for_code", (code,))?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("path", path.clone())?;
            let instance = class.call((message.clone(),), Some(&kwargs))?;
            Ok(PyErr::from_value(instance))
        };
        build().unwrap_or_else(|e| e)
    })
}

/// Run native work without the GIL, turning a panic into a `TraceforgeError` instead of a crash.
pub(crate) fn run_native<T: Send>(py: Python<'_>, work: impl FnOnce() -> Result<T, Error> + Send) -> PyResult<T> {
    let outcome = py.allow_threads(|| catch_unwind(AssertUnwindSafe(work)));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py_err(err)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(to_py_err(Error::Invalid(format!("internal error in traceforge core (please report): {what}"))))
        }
    }
}

/// Versions of the native build: the core crate and the bundled SQLite.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("core_version", env!("CARGO_PKG_VERSION"))?;
    info.set_item("sqlite_version", rusqlite::version())?;
    Ok(info)
}

/// Every error code the core can raise (each `traceforge.errors` class's `code`).
#[pyfunction]
fn error_codes() -> Vec<&'static str> {
    ERROR_CODES.to_vec()
}

/// xxh3-128 of a file's bytes as 32 hex digits.
/// Names of the tables `TraceHandle.tables()` yields, in write order.
#[pyfunction]
fn write_order() -> Vec<&'static str> {
    Trace::WRITE_ORDER.to_vec()
}

/// xxh3-128 of a regular file's bytes as 32 hex digits; `cancel` stops the hashing (then
/// `IngestInterrupted`).
#[pyfunction]
#[pyo3(signature = (path, cancel = None))]
fn fingerprint(py: Python<'_>, path: PathBuf, cancel: Option<&CancelToken>) -> PyResult<String> {
    let cancel = cancel.map(|token| Arc::clone(&token.flag)).unwrap_or_default();
    run_native(py, move || traceforge_core::fingerprint::fingerprint_file_until(&path, &cancel))
}

/// Check that `path` is a regular file holding a whole SQLite database with no pending write-ahead log,
/// reading only its header: the check an ingest makes before hashing or reading anything.
#[pyfunction]
fn check_export(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    run_native(py, move || traceforge_core::export::open::ExportFile::open(&path).map(|_| ()))
}

/// An export being ingested: read GPU operations, then stream API calls, then derived tables.
#[pyclass(module = "traceforge._core", frozen)]
struct TraceHandle {
    trace: Arc<Trace>,
    cancel: Arc<AtomicBool>,
    failure: StreamFailure,
}

#[pymethods]
impl TraceHandle {
    /// Metadata for the `traces` row and the capabilities probe.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.trace;
        let d = PyDict::new(py);
        d.set_item("export_path", t.file.path.display().to_string())?;
        d.set_item("file_size_bytes", t.file.size)?;
        d.set_item("nsys_version", t.caps.nsys_version())?;
        d.set_item("schema_version", t.caps.schema_version())?;
        let opt = |v: i64| (v != traceforge_core::ids::NULL_I64).then_some(v);
        d.set_item("capture_start_utc_ns", opt(t.target.session_start_utc_ns))?;
        d.set_item("trace_start_ns", opt(t.target.trace_start_ns))?;
        d.set_item("trace_end_ns", opt(t.target.trace_end_ns))?;
        d.set_item("gpu_count", t.target.gpus.len())?;
        let names: Vec<String> =
            t.target.gpus.iter().map(|g| g.name.clone().unwrap_or_else(|| format!("GPU {}", g.id))).collect();
        d.set_item("gpus", names.join("; "))?;
        d.set_item("tables_present", t.caps.present_event_tables().join(","))?;
        let c = t.counts();
        d.set_item("kernel_count", c.kernels)?;
        d.set_item("memop_count", c.memops)?;
        d.set_item("api_call_count", c.api_calls)?;
        d.set_item("nvtx_count", c.nvtx)?;
        d.set_item("graph_exec_count", c.graph_execs)?;
        d.set_item("cuda_graph_trace", t.cuda_graph_trace())?;
        d.set_item("long_string_bytes", t.long_string_bytes())?;
        d.set_item("metadata", t.caps.metadata.clone().into_iter().collect::<Vec<_>>())?;
        Ok(d)
    }

    /// Every stored table in write order, as an iterator of `(name, stream)` pairs; consume each
    /// stream before taking the next pair.
    fn tables(&self) -> TableIterator {
        TableIterator { tables: Mutex::new(self.trace.tables()), failure: Arc::clone(&self.failure) }
    }

    /// Raise the first error one of this trace's streams failed with (as the consumer saw it, wrapped in
    /// its own message); return None when none failed.
    fn raise_stream_error(&self) -> PyResult<()> {
        let kept = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match kept {
            Some((code, path, message)) => Err(error_of(code, path, message)),
            None => Ok(()),
        }
    }

    /// Ask running scans to stop (Ctrl-C).
    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The stored tables of a trace in write order: `(name, ArrowStream)` pairs, each made when it is reached
/// (the metrics are derived, without the GIL, when the first table after `api_call_rows` is asked for).
#[pyclass(module = "traceforge._core", frozen)]
struct TableIterator {
    tables: Mutex<Tables>,
    failure: StreamFailure,
}

#[pymethods]
impl TableIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<(&'static str, ArrowStream)>> {
        let tables = &self.tables;
        let next = run_native(py, || tables.lock().unwrap_or_else(|p| p.into_inner()).next().transpose())?;
        Ok(next.map(|(name, stream)| (name, ArrowStream::recording(Box::new(stream), Arc::clone(&self.failure)))))
    }
}

/// A flag that stops an `open_trace` running on another thread, and the streams of the trace it opens.
#[pyclass(module = "traceforge._core", frozen)]
#[derive(Default)]
struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Ask the work watching this token to stop; it then fails with `IngestInterrupted`.
    fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether `cancel` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Open an nsys SQLite export and read its GPU operations (`threads` = 0: all cores). `cancel` lets
/// another thread stop the reading.
#[pyfunction]
#[pyo3(signature = (path, threads = 0, cancel = None))]
fn open_trace(py: Python<'_>, path: PathBuf, threads: usize, cancel: Option<&CancelToken>) -> PyResult<TraceHandle> {
    let cancel = cancel.map(|token| Arc::clone(&token.flag)).unwrap_or_default();
    let c = Arc::clone(&cancel);
    let options = IngestOptions::from_env().with_threads(threads);
    let trace = run_native(py, move || Trace::open(&path, &options, c))?;
    Ok(TraceHandle { trace, cancel, failure: StreamFailure::default() })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(check_export, m)?)?;
    m.add_function(wrap_pyfunction!(write_order, m)?)?;
    m.add_function(wrap_pyfunction!(open_trace, m)?)?;
    m.add_class::<TraceHandle>()?;
    m.add_class::<TableIterator>()?;
    m.add_class::<CancelToken>()?;
    m.add_class::<ArrowStream>()?;
    derive::register(m)?;
    synth::register(m)?;
    timeline::register(m)?;
    Ok(())
}
