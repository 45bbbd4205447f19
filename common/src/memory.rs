//! Giving memory back to the system after a burst (glibc's allocator; elsewhere these are
//! no-ops).
//!
//! glibc keeps what a process freed: per-thread arenas (up to 8 per core) each hold their
//! own free pages, and its mmap threshold rises to the largest block freed, so after one
//! argon2id check (19 MiB) every later one comes from an arena and stays resident. A burst
//! of 1,000 logins and connections then left GiBs resident after they closed. So: a fixed
//! mmap threshold (big blocks are mapped and unmapped on free), fewer arenas, and a
//! `malloc_trim` once connections have gone (it returns the free pages inside the heaps too).

use std::time::Duration;

use crate::net::Shutdown;

/// Blocks from this size up are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 256 * 1024;
/// Free memory at the top of a heap beyond this goes back at once.
const TRIM_THRESHOLD: i32 = 1024 * 1024;
/// How often the trimmer looks at the connection count.
const TRIM_CHECK: Duration = Duration::from_secs(2);
/// Connections that must have closed since the last trim before the next one.
const TRIM_AFTER_CLOSED: usize = 32;

/// Sets the allocator's policy; call once at start, before threads allocate much.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = i32::try_from(cores.max(2)).unwrap_or(2);
        // SAFETY: mallopt only changes glibc's allocator parameters; any value is allowed.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Returns free heap memory to the system. Takes the allocator's locks for a moment: call
/// it after bursts, not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs until `shutdown`: whenever at least [`TRIM_AFTER_CLOSED`] of the connections counted
/// by `open` have closed since the last look, hands the freed memory back.
pub async fn trim_after_closes(open: impl Fn() -> usize, shutdown: Shutdown) {
    let mut high = open();
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            _ = tokio::time::sleep(TRIM_CHECK) => {}
        }
        let now = open();
        if high.saturating_sub(now) >= TRIM_AFTER_CLOSED {
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
            tracing::debug!(before = high, now, "connections closed; memory trimmed");
            high = now;
        } else {
            high = high.max(now);
        }
    }
}
