//! Arrow C stream export: a Rust `RecordBatchReader` behind the `__arrow_c_stream__` protocol, so
//! DuckDB and polars read traceforge's batches without a copy and without pyarrow.
use std::ffi::CString;
use std::sync::{Arc, Mutex};

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{ArrowError, SchemaRef};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use traceforge_core::error::Error;

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

    /// A stream whose first core error is also kept in `failure`: the consumer (DuckDB) reports it wrapped
    /// in its own words and cut short, so the caller raises the kept one instead.
    pub fn recording(reader: Box<dyn RecordBatchReader + Send>, failure: StreamFailure) -> Self {
        Self::new(Box::new(Recording { inner: reader, failure }))
    }
}

/// The first error a trace's streams failed with: `(code, path, message)` of the core error.
pub type StreamFailure = Arc<Mutex<Option<(&'static str, Option<String>, String)>>>;

/// A reader that keeps the first core error it passes on.
struct Recording {
    inner: Box<dyn RecordBatchReader + Send>,
    failure: StreamFailure,
}

impl Iterator for Recording {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next();
        if let Some(Err(err)) = &item {
            let kept = match err {
                ArrowError::ExternalError(inner) => match inner.downcast_ref::<Error>() {
                    Some(core) => {
                        let (path, message) = core.parts();
                        (core.code(), path.map(|p| p.display().to_string()), message)
                    }
                    None => ("invalid", None, inner.to_string()),
                },
                other => ("invalid", None, other.to_string()),
            };
            let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(kept);
        }
        item
    }
}

impl RecordBatchReader for Recording {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
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
