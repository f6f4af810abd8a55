//! Arrow C stream export: a Rust `RecordBatchReader` behind the `__arrow_c_stream__` protocol, so
//! DuckDB and polars read traceforge's batches without a copy and without pyarrow.
use std::ffi::CString;
use std::sync::Mutex;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::RecordBatchReader;
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::SchemaRef;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// A single-use stream of Arrow record batches.
#[pyclass(module = "traceforge._core", frozen)]
pub struct ArrowStream {
    schema: SchemaRef,
    reader: Mutex<Option<Box<dyn RecordBatchReader + Send>>>,
}

impl ArrowStream {
    pub fn new(reader: Box<dyn RecordBatchReader + Send>) -> Self {
        ArrowStream { schema: reader.schema(), reader: Mutex::new(Some(reader)) }
    }
}

#[pymethods]
impl ArrowStream {
    /// The Arrow PyCapsule schema protocol: consumers (DuckDB 1.5+) read the schema here, so the
    /// single-use stream is asked for only once.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = FFI_ArrowSchema::try_from(self.schema.as_ref())
            .map_err(|e| PyRuntimeError::new_err(format!("cannot export the Arrow schema: {e}")))?;
        let name = CString::new("arrow_schema").expect("static name");
        PyCapsule::new(py, schema, Some(name))
    }

    /// The Arrow PyCapsule stream protocol; the stream can be consumed once.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<PyObject>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema; // batches are produced in the store's own schema
        let reader = self
            .reader
            .lock()
            .map_err(|_| PyRuntimeError::new_err("arrow stream lock poisoned"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this Arrow stream was already consumed"))?;
        let stream = FFI_ArrowArrayStream::new(reader);
        let name = CString::new("arrow_array_stream").expect("static name");
        PyCapsule::new(py, stream, Some(name))
    }
}
