//! Allocator settings for a long-running server. A map session's full map is one large buffer
//! (about 500 bytes per peer, uncompressed for clients that do not ask for zstd) that lives
//! until the client has read it; a reconnect storm makes one per node at once. glibc's malloc
//! raises its mmap threshold after the first such buffer is freed and from then on keeps them
//! in heaps it rarely returns, so the storm's peak would stay resident for good. A fixed
//! threshold keeps large buffers in their own mappings, returned to the system when freed.

/// Buffers at least this large get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the settings; call once at start-up, before the server allocates much.
pub fn tune_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate heavily, and glibc serializes it with allocation anyway.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 0 {
            tracing::warn!("could not set malloc's mmap threshold; memory after load peaks may stay resident");
        }
    }
}
