//! traceforge-core: everything traceforge computes, without Python.
//!
//! - [`export`]: reading nsys SQLite exports (schema probe, streaming table readers).
//! - [`timeline`]: per-device and per-stream timeline metrics (sweep line, gaps, launch latency, NVTX projection).
//! - [`columnar`]: Arrow record batches handed to Python.
pub mod columnar;
pub mod error;
pub mod export;
pub mod fingerprint;
pub mod memory;
pub mod reanalysis;
pub mod timeline;
pub mod trace;
