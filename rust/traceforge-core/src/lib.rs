//! traceforge-core: everything traceforge computes, without Python.
//!
//! - [`export`]: reading nsys SQLite exports (schema probe, parallel rowid scans, the direct b-tree
//!   reader and its plan, typed event tables).
//! - [`ingest`]: one trace from export to Arrow tables (launch matching, class interning, table builders),
//!   yielded in write order by [`ingest::Trace::tables`].
//! - [`timeline`]: per-device and per-stream timeline metrics (sweep line, gaps, percentiles, summaries,
//!   NVTX ranges and their projection onto GPU work).
//! - [`reanalysis`]: the same metrics from tables already in the store.
//! - Leaves shared by all of them: [`ids`] (nsys id encodings), [`views`] (column views of GPU
//!   operations), [`options`] (the performance switches), [`columnar`] (Arrow columns and streams),
//!   [`error`], `memory`, [`fingerprint`].
//! - [`trace_export`]: a stored trace written as a Perfetto protobuf or Chrome JSON timeline.
pub mod columnar;
pub mod error;
pub mod export;
pub mod fingerprint;
pub mod ids;
pub mod ingest;
pub(crate) mod memory;
pub mod options;
pub mod reanalysis;
pub mod timeline;
pub mod trace_export;
pub(crate) mod varint;
pub mod views;
