//! `traceforge._core`: the PyO3 binding of traceforge-core.
//!
//! It only converts arguments, releases the GIL around native work and maps core errors to the Python
//! exception tree of `traceforge.errors`; every algorithm lives in `traceforge-core`.
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod synth;

/// Versions of the native build: the core crate and the bundled SQLite.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("core_version", env!("CARGO_PKG_VERSION"))?;
    info.set_item("sqlite_version", rusqlite::version())?;
    Ok(info)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    synth::register(m)?;
    Ok(())
}
