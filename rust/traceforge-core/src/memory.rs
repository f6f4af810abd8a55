//! Bounding an ingest's peak memory: giving freed memory back to the system between phases.
//!
//! The reader builds each column from many per-chunk pieces of a few hundred KB, then gathers them into
//! one buffer. glibc keeps freed pieces of that size in its heap for reuse, but the large buffers that
//! follow are mapped separately and never reuse them, so without a trim they stay resident, unused, for
//! the rest of the ingest. The size above which the core also trades speed for a lower peak is
//! [`crate::options::IngestOptions::low_memory_above`].

/// Return the allocator's free memory to the system (glibc on Linux; elsewhere nothing to do).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
