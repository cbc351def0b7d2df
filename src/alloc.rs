//! Allocator settings for a long-running server. Some buffers are large and short-lived (a
//! whole map assembled for a client that asks for zstd, about 600 bytes per peer before
//! compression; policy compilation's tables). glibc's malloc raises its mmap threshold after
//! the first such buffer is freed and from then on keeps them in heaps it rarely returns, so
//! a load peak would stay resident for good. A fixed threshold keeps large buffers in their
//! own mappings, returned to the system when freed.
//! Smaller blocks freed in the middle of a heap (connections that come and go) keep their
//! pages resident too, since glibc only shrinks a heap from its top; a background task hands
//! those pages back every few seconds (`malloc_trim`).

/// How often freed heap pages are handed back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Hands freed heap pages back to the system every `TRIM_EVERY`, for as long as the runtime
/// runs. Call from inside the server's runtime.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only returns free memory to the system; glibc locks each
            // arena while it walks it.
            let trim = || unsafe { libc::malloc_trim(0) };
            if tokio::task::spawn_blocking(trim).await.is_err() {
                break;
            }
        }
    });
}
