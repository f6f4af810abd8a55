//! Reading Nsight Systems SQLite exports.
//!
//! The export is opened read-only and immutable (no locks, no journal), its schema is probed once
//! ([`probe`]), and tables are read by rowid ranges on several connections in parallel ([`scan`]), each
//! range read straight from the table's b-tree pages ([`btree`]) when the [`plan`] allows it.
//! Tables and columns are discovered at run time: a trace without memcpy has no memcpy table, and each
//! nsys release adds columns, so every reader asks the probe instead of assuming.
pub mod btree;
pub mod events;
pub mod gpu_metrics;
pub mod open;
pub mod os_calls;
pub mod plan;
pub mod probe;
pub mod scan;
pub mod strings;

pub use events::{ApiChunk, GpuOps, NvtxEvents, TargetInfo};
pub use open::ExportFile;
pub use probe::Capabilities;
pub use strings::StringTable;
