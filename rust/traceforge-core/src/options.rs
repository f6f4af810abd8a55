//! The performance switches of an ingest, read from the environment once and passed down.
//!
//! Nothing below this value reads the environment: [`IngestOptions::from_env`] is called where a run
//! starts (the binding's `open_trace` and `rederive`), and every reader and metric takes the value it
//! needs from the options it was given, so one run never sees two settings.

/// Environment variable: the number of GPU operations above which an ingest works in its low-memory way.
pub const LOW_MEMORY_ABOVE_ENV: &str = "TRACEFORGE_LOW_MEMORY_ABOVE";

/// Environment variable that forces scans through SQLite (benchmarks, and an escape hatch).
pub const FORCE_SQLITE_ENV: &str = "TRACEFORGE_SQLITE_SCAN";

/// Default of [`IngestOptions::low_memory_above`]: beyond it the working buffers that side-by-side work
/// would add up to are large, while the time saved stays small.
pub const DEFAULT_LOW_MEMORY_ABOVE: usize = 2_000_000;

/// How one ingest (or re-analysis) trades speed against memory, and how it reads the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOptions {
    /// GPU operations (or values) above which the core works in its low-memory way: kernel columns
    /// gathered one at a time, metric parts computed in turn, percentiles found without a copy (0: always).
    pub low_memory_above: usize,
    /// Read every table through SQLite's VM instead of the direct b-tree reader.
    pub force_sqlite_scan: bool,
    /// Reader threads; 0 means one per core.
    pub threads: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { low_memory_above: DEFAULT_LOW_MEMORY_ABOVE, force_sqlite_scan: false, threads: 0 }
    }
}

impl IngestOptions {
    /// The defaults, overridden by `TRACEFORGE_LOW_MEMORY_ABOVE` (a count; a value that does not parse
    /// keeps the default) and `TRACEFORGE_SQLITE_SCAN=1`.
    pub fn from_env() -> Self {
        Self::from_values(
            std::env::var(LOW_MEMORY_ABOVE_ENV).ok().as_deref(),
            std::env::var_os(FORCE_SQLITE_ENV).is_some_and(|v| v == "1"),
        )
    }

    fn from_values(low_memory_above: Option<&str>, force_sqlite_scan: bool) -> Self {
        IngestOptions {
            low_memory_above: low_memory_above.and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_LOW_MEMORY_ABOVE),
            force_sqlite_scan,
            ..Self::default()
        }
    }

    /// These options with `threads` reader threads (0: one per core).
    pub fn with_threads(self, threads: usize) -> Self {
        IngestOptions { threads, ..self }
    }

    /// The reader threads to start: [`IngestOptions::threads`], or one per core when that is 0.
    pub fn reader_threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.threads
        }
    }

    /// Whether `n` operations are beyond the low-memory threshold.
    #[inline]
    pub fn low_memory(&self, n: usize) -> bool {
        n > self.low_memory_above
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_the_environment_did() {
        assert_eq!(IngestOptions::from_values(None, false), IngestOptions::default());
        assert_eq!(IngestOptions::from_values(Some(" 0 "), false).low_memory_above, 0);
        assert_eq!(IngestOptions::from_values(Some("12"), true).low_memory_above, 12);
        // A value that does not parse keeps the default, as before.
        assert_eq!(IngestOptions::from_values(Some("lots"), false).low_memory_above, DEFAULT_LOW_MEMORY_ABOVE);
        assert!(IngestOptions::from_values(None, true).force_sqlite_scan);
        assert_eq!(IngestOptions::default().with_threads(3).reader_threads(), 3);
    }
}
