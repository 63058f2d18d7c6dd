//! Process-wide settings every clipada program applies first.
//!
//! Memory: glibc's allocator raises its threshold for serving large blocks from fresh mappings
//! each time such a block is freed, after which frames, engine outputs and PNG encoders (blocks
//! of hundreds of kilobytes, allocated and freed per frame) come from the heap and fragment it:
//! a station's resident memory was seen to grow by several hundred megabytes, at random, before
//! it settled. Fixing the threshold at [`MMAP_THRESHOLD`] keeps those blocks in their own
//! mappings, returned when freed, and the resident memory flat (benches/soak.rs measures it).

/// Blocks at least this large get mappings of their own (glibc's initial value, kept fixed).
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Applies the settings; call it once, before any thread is started.
pub fn set_up() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts the allocator's parameters; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
