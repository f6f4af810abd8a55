//! Reading Nsight Systems SQLite exports.
//!
//! The export is opened read-only and immutable (no locks, no journal), its schema is probed once
//! ([`probe`]), and tables are read by rowid ranges on several connections in parallel ([`scan`]).
//! Tables and columns are discovered at run time: a trace without memcpy has no memcpy table, and each
//! nsys release adds columns, so every reader asks the probe instead of assuming.
pub mod btree;
pub mod events;
pub mod open;
pub mod probe;
pub mod scan;
pub mod strings;

pub use events::{ApiChunk, GpuOps, NvtxEvents, TargetInfo};
pub use open::ExportFile;
pub use probe::Capabilities;
pub use strings::StringTable;

/// Sentinel for a NULL integer cell; converted back to a null by the Arrow layer.
pub const NULL_I64: i64 = i64::MIN;

/// Decode nsys' serialized `globalTid`/`globalPid` into (pid, tid).
///
/// nsys packs `(vm << 56) | (pid << 24) | tid` into one integer.
#[inline]
pub fn decode_global_id(global: i64) -> (i64, i64) {
    if global == NULL_I64 {
        return (NULL_I64, NULL_I64);
    }
    ((global >> 24) & 0xFF_FFFF, global & 0xFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_global_ids_of_a_real_export() {
        // globalTid 281489287676810 of the llama1b fixture belongs to pid 853 (its PROCESSES table says so).
        let g: i64 = 281489287676810;
        let (pid, tid) = decode_global_id(g);
        assert_eq!(pid, 853);
        assert_eq!(tid, g & 0xFF_FFFF);
        assert_eq!(decode_global_id(NULL_I64), (NULL_I64, NULL_I64));
    }
}
