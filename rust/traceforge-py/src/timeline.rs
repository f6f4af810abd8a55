//! Binding of the timeline writer (`traceforge export --format perfetto|chrome-json`): tracks declared
//! from Python, slices and counter samples streamed in as Arrow C streams straight from DuckDB.
use std::path::PathBuf;
use std::sync::Mutex;

use arrow_array::ffi_stream::ArrowArrayStreamReader;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use traceforge_core::error::Error;
use traceforge_core::trace_export::{Format, TraceWriter, TrackInfo};

use crate::derive::import_stream;
use crate::{run_native, to_py_err};

/// A Perfetto or Chrome JSON timeline file being written.
#[pyclass(module = "traceforge._core", frozen)]
struct TimelineWriter {
    writer: Mutex<Option<TraceWriter>>,
}

fn closed() -> Error {
    Error::Invalid("timeline writer already finished".into())
}

impl TimelineWriter {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut TraceWriter) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        let writer = &self.writer;
        run_native(py, move || {
            let mut guard = writer.lock().unwrap_or_else(|p| p.into_inner());
            work(guard.as_mut().ok_or_else(closed)?)
        })
    }

    fn consume(
        &self,
        py: Python<'_>,
        mut stream: ArrowArrayStreamReader,
        each: fn(&mut TraceWriter, &arrow_array::RecordBatch) -> Result<(), Error>,
    ) -> PyResult<u64> {
        self.with(py, move |w| {
            let mut rows = 0u64;
            for batch in &mut stream {
                let batch = batch.map_err(|e| Error::Invalid(format!("reading timeline rows: {e}")))?;
                rows += batch.num_rows() as u64;
                each(w, &batch)?;
            }
            Ok(rows)
        })
    }
}

#[pymethods]
impl TimelineWriter {
    /// Create `path` (truncating it) for a timeline in `format` (`perfetto` or `chrome-json`).
    #[new]
    fn new(py: Python<'_>, path: PathBuf, format: &str) -> PyResult<Self> {
        let format = Format::parse(format).map_err(to_py_err)?;
        let writer = run_native(py, move || TraceWriter::create(&path, format))?;
        Ok(TimelineWriter { writer: Mutex::new(Some(writer)) })
    }

    /// Declare a track (parents first): a process (`pid`), a thread (`pid` and `tid`), a counter, or a
    /// plain named track.
    #[pyo3(signature = (uuid, name, parent = None, pid = None, tid = None, counter = false, unit = None, rank = 0))]
    #[allow(clippy::too_many_arguments)]
    fn track(
        &self,
        py: Python<'_>,
        uuid: u64,
        name: String,
        parent: Option<u64>,
        pid: Option<i64>,
        tid: Option<i64>,
        counter: bool,
        unit: Option<String>,
        rank: i64,
    ) -> PyResult<()> {
        let info = TrackInfo { uuid, parent, name, pid, tid, counter, unit, rank };
        self.with(py, move |w| w.track(info))
    }

    /// Write the slices of an Arrow stream (`track, start_ns, end_ns, name[, flow_out, flow_in]`, each
    /// track's rows ordered by start); returns the rows read.
    fn slices(&self, py: Python<'_>, stream: &Bound<'_, PyAny>) -> PyResult<u64> {
        let stream = import_stream(stream)?;
        self.consume(py, stream, TraceWriter::slices_batch)
    }

    /// Write the counter samples of an Arrow stream (`track, ts_ns, value`); returns the rows read.
    fn counters(&self, py: Python<'_>, stream: &Bound<'_, PyAny>) -> PyResult<u64> {
        let stream = import_stream(stream)?;
        self.consume(py, stream, TraceWriter::counters_batch)
    }

    /// Flush and close the file; returns what was written (`tracks`, `overlap_lanes`, `slices`,
    /// `counters`, `flow_starts`, `flow_steps`, `skipped`, `bytes`).
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let writer = &self.writer;
        let stats = run_native(py, move || {
            let w = writer.lock().unwrap_or_else(|p| p.into_inner()).take().ok_or_else(closed)?;
            w.finish()
        })?;
        let d = PyDict::new(py);
        d.set_item("tracks", stats.tracks)?;
        d.set_item("overlap_lanes", stats.overlap_lanes)?;
        d.set_item("slices", stats.slices)?;
        d.set_item("counters", stats.counters)?;
        d.set_item("flow_starts", stats.flow_starts)?;
        d.set_item("flow_steps", stats.flow_steps)?;
        d.set_item("skipped", stats.skipped)?;
        d.set_item("bytes", stats.bytes)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TimelineWriter>()?;
    Ok(())
}
