//! How nsys identifies threads, processes and launches, and the NULL sentinel of integer columns.
//!
//! A leaf module: the export reader, the timeline metrics and the ingest all speak these encodings, so
//! they live below all three.

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

/// `(pid << 24) | tid` from a serialized globalTid: one thread, whatever VM id nsys put above it.
#[inline]
pub fn thread_key(global_tid: i64) -> i64 {
    if global_tid == NULL_I64 {
        NULL_I64
    } else {
        global_tid & 0xFFFF_FFFF_FFFF
    }
}

/// `(pid << 40) | correlationId`: correlation ids are unique only within a process.
#[inline]
pub fn launch_key(pid: i64, correlation: i64) -> i64 {
    if pid == NULL_I64 || correlation == NULL_I64 {
        NULL_I64
    } else {
        (pid << 40) | (correlation & 0xFF_FFFF_FFFF)
    }
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

    #[test]
    fn launch_keys_differ_across_processes_and_null_stays_null() {
        assert_ne!(launch_key(1, 7), launch_key(2, 7));
        assert_eq!(launch_key(NULL_I64, 7), NULL_I64);
        assert_eq!(launch_key(1, NULL_I64), NULL_I64);
        assert_eq!(thread_key((3 << 56) | (5 << 24) | 9), (5 << 24) | 9);
    }
}
