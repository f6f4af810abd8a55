//! Bounding an ingest's peak memory: giving freed memory back to the system between phases, and the
//! size above which the core trades some speed for a lower peak.
//!
//! The reader builds each column from many per-chunk pieces of a few hundred KB, then gathers them into
//! one buffer. glibc keeps freed pieces of that size in its heap for reuse, but the large buffers that
//! follow are mapped separately and never reuse them: on a 25M-kernel trace about 700 MB stayed resident,
//! unused, for the rest of the ingest. Trimming the heap after such a phase returns it.

/// Return the allocator's free memory to the system (glibc on Linux; elsewhere nothing to do).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Environment variable: the number of GPU operations above which an ingest works in its low-memory way.
pub const LOW_MEMORY_ABOVE_ENV: &str = "TRACEFORGE_LOW_MEMORY_ABOVE";

/// Default of [`low_memory_above`]: beyond it the working buffers that side-by-side work would add up to
/// are hundreds of MB, while the time saved stays a few percent.
pub const DEFAULT_LOW_MEMORY_ABOVE: usize = 2_000_000;

/// GPU operations (or values) above which the core works in its low-memory way: kernel columns gathered
/// one at a time, metric parts computed in turn, percentiles found without a copy.
/// `TRACEFORGE_LOW_MEMORY_ABOVE` overrides the default (0: always).
pub fn low_memory_above() -> usize {
    std::env::var(LOW_MEMORY_ABOVE_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_LOW_MEMORY_ABOVE)
}
