//! Binding of the synthetic export generator (traceforge_core::synth).
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
