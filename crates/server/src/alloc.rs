//! Memory that comes back after a burst: glibc malloc's settings and a trimmer thread.
//!
//! Measured (docs/reliability.md, "Memory after a burst"): eight 30 MiB request bodies at a
//! time left RSS ~330 MiB above its idle level for good. Two glibc behaviours keep it: the
//! mmap threshold rises to the size of each large block freed (up to 32 MiB), after which
//! blocks that large come from the arenas instead of fresh mappings; and the arenas return
//! freed memory only from their top. mimalloc was tried in its place and did worse here (idle
//! 296 MiB against glibc's 190, and +180 MiB after the burst).
//!
//! So: a fixed mmap threshold (large buffers are mapped and unmapped, never kept), and a
//! thread that gives the arenas' free pages back (`malloc_trim`) when RSS has grown past its
//! level after the last trim, and retries every few seconds while it stays above the lowest
//! level seen (a trim costs microseconds when there is nothing to give back).
//!
//! Fixing the mmap threshold also fixes glibc's trim threshold at its 128 KiB default (the
//! dynamic rule would have raised it with the mmap threshold), and then every free of a few
//! hundred KiB at the top of a thread's arena hands its pages back (`madvise`), to be faulted
//! in again by the next step: a decode step at a 481-token context reads back that much K and
//! V per layer, and ran at 30 tok/s instead of 53 (docs/perf.md). So the automatic trim
//! threshold is set high and returning a burst's memory is left to the trimmer, whose
//! `malloc_trim(0)` ignores it — which is why the trimmer measures from the lowest level RSS
//! has had, not from its last trim: a burst freed after a trim that ran while it was in use
//! is no longer handed back by `free`. And one arena for every thread: `malloc_trim` gives
//! back the top of the main arena only, so a thread arena's free top (up to the trim
//! threshold) would stay resident after a burst (seen: 136 → 155 MiB, against 10%); small
//! allocations still go through each thread's cache without the arena's lock.

use std::time::Duration;

/// Blocks from this size up are their own mappings, returned to the OS when freed: the 30 MiB
/// bodies of a burst and the KV pool's tensors. Below it, a step's buffers — 16 rows of logits
/// (3 MB), a long prompt's activations and a prefill's per-call dequantized weights (1–7 MB) —
/// come from the arena and reuse its pages: at 1 MiB each was fresh pages faulted in every
/// step (16 streams: 107 → 152 tokens/s at 8 MiB; a 481-token prompt's first token 1.67 →
/// 1.25 s). Safe since there is one arena, all of which `malloc_trim` reaches.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 8 << 20;
/// Free bytes at the top of an arena that `free` itself leaves in place: more than a step's
/// buffers of a few hundred KiB each, so steps reuse their pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 32 << 20;
/// RSS growth since the last trim that is worth a trim.
const TRIM_AFTER_GROWTH: u64 = 16 << 20;
/// RSS over the lowest level seen that is worth a trim every `RETRY_EVERY` (the KV pool, which
/// is committed as it is first used, keeps RSS above it for good: then a trim every few
/// seconds, which hands back only what is free).
const STUCK_ABOVE_LOWEST: u64 = 4 << 20;
const CHECK_EVERY: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Sets glibc's allocator up and starts the trimmer; elsewhere (musl, other systems) nothing
/// needs doing or can be done this way.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD);
        let _ = std::thread::Builder::new()
            .name("kiln-trim".into())
            .spawn(|| trim_loop(glibc::trim));
    }
}

/// Trims when RSS has grown `TRIM_AFTER_GROWTH` since the last trim (a burst), and at most
/// every `RETRY_EVERY` while it stays `STUCK_ABOVE_LOWEST` over the lowest level seen (a
/// burst's memory freed after a trim that ran while it was still in use).
fn trim_loop(trim: fn()) {
    let mut after_last = rss().unwrap_or(0);
    let mut lowest = after_last;
    let mut last = std::time::Instant::now();
    loop {
        std::thread::sleep(CHECK_EVERY);
        let Some(now) = rss() else { return };
        lowest = lowest.min(now);
        let grew = now > after_last + TRIM_AFTER_GROWTH;
        let stuck =
            now > lowest.saturating_add(STUCK_ABOVE_LOWEST) && last.elapsed() >= RETRY_EVERY;
        if grew || stuck {
            trim();
            last = std::time::Instant::now();
            after_last = rss().unwrap_or(now);
            lowest = lowest.min(after_last);
        } else if now < after_last {
            after_last = now;
        }
    }
}

/// Resident bytes of this process (`/proc/self/statm`, in pages).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    pub(super) fn set_thresholds(mmap: i32, trim: i32) {
        // SAFETY: mallopt only changes malloc's parameters; it takes no pointers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }

    pub(super) fn trim() {
        // SAFETY: malloc_trim only returns free memory to the OS; it takes no pointers.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_read() {
        assert!(super::rss().is_some_and(|b| b > 1 << 20));
    }
}
