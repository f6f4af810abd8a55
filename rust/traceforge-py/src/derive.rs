//! Binding of re-analysis: stored rows in (Arrow C streams from DuckDB), derived tables out.
use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};

use traceforge_core::error::Error;
use traceforge_core::options::IngestOptions;

use crate::{run_native, ArrowStream};

/// Take ownership of the Arrow C stream behind any object implementing `__arrow_c_stream__`.
pub(crate) fn import_stream(obj: &Bound<'_, PyAny>) -> PyResult<ArrowArrayStreamReader> {
    let capsule = obj.call_method0("__arrow_c_stream__")?;
    let capsule = capsule
        .downcast::<PyCapsule>()
        .map_err(|_| PyTypeError::new_err("__arrow_c_stream__ did not return a capsule"))?;
    let raw = capsule.pointer() as *mut FFI_ArrowArrayStream;
    // SAFETY: the capsule holds a valid ArrowArrayStream (the protocol's contract); we move it out and
    // leave a released (empty) struct behind, so the capsule's destructor does not release it twice.
    let stream = unsafe { std::ptr::replace(raw, FFI_ArrowArrayStream::empty()) };
    ArrowArrayStreamReader::try_new(stream).map_err(|e| PyTypeError::new_err(format!("invalid Arrow stream: {e}")))
}

/// Recompute the derived tables of one trace from its stored `kernels`, `memops`, `nvtx_ranges` and
/// (when given) `graph_launches`, the thread states of idle attribution `host_states` (rows of pid,
/// tid, state, start_ns, end_ns), and `gpu_metrics`.
///
/// Returns a dict: table name -> Arrow stream.
#[pyfunction]
#[pyo3(signature = (kernels, memops, nvtx_ranges, graph_launches = None, host_states = None, gpu_metrics = None))]
fn rederive<'py>(
    py: Python<'py>,
    kernels: &Bound<'py, PyAny>,
    memops: &Bound<'py, PyAny>,
    nvtx_ranges: &Bound<'py, PyAny>,
    graph_launches: Option<&Bound<'py, PyAny>>,
    host_states: Option<&Bound<'py, PyAny>>,
    gpu_metrics: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut k = import_stream(kernels)?;
    let mut m = import_stream(memops)?;
    let mut n = import_stream(nvtx_ranges)?;
    let mut g = graph_launches.map(import_stream).transpose()?;
    let mut h = host_states.map(import_stream).transpose()?;
    let mut s = gpu_metrics.map(import_stream).transpose()?;
    let options = IngestOptions::from_env();
    let tables = run_native(py, move || -> Result<_, Error> {
        let g = g.as_mut().map(|g| g as &mut dyn Iterator<Item = _>);
        let h = h.as_mut().map(|h| h as &mut dyn Iterator<Item = _>);
        let s = s.as_mut().map(|s| s as &mut dyn Iterator<Item = _>);
        traceforge_core::reanalysis::rederive(&mut k, &mut m, &mut n, g, h, s, &options)
    })?;
    let out = PyDict::new(py);
    for (name, stream) in tables {
        out.set_item(name, ArrowStream::new(Box::new(stream)))?;
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(rederive, m)?)?;
    Ok(())
}
