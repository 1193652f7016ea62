//! Allocator tuning for a daemon that handles large messages.
//!
//! Owns: the one `mallopt` call (with the smime FFI shim, the only unsafe
//! code of pecd). Must not touch: anything else.
//!
//! glibc's malloc raises its mmap threshold each time a large block is
//! freed (up to 32 MB), after which the buffers of a large message come
//! from the per-thread arenas and stay there once freed: after one 30 MB
//! message every worker thread would keep its peak for good (measured:
//! peak RSS 227 MB → 110 MB for a 30 MB message with the threshold fixed;
//! `cargo bench --bench rss`). A fixed threshold keeps large buffers in
//! their own mappings, returned to the system on free.

/// Call once at start, before other threads exist.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only changes allocator parameters; called before the
    // runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
