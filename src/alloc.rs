//! The process's memory allocator, and what it and the kernel say about memory.
//!
//! Owns: the choice of allocator ([`Global`], installed by `main`: jemalloc, built with
//! background purging on, so that memory freed when clients leave goes back to the OS
//! within its decay time (10 s) even on an idle broker; docs/decisions/0012-allocator.md
//! has the measurements against glibc and mimalloc), and the process-wide memory figures
//! read on demand for `/metrics`. Without the `jemalloc` feature (a sanitizer build,
//! `scripts/asan`) [`Global`] is the system allocator and the allocator has no figures. Invariant: nothing here runs on a shard's per-message
//! path; reading the figures costs a few syscalls or allocator calls, once per scrape.
//! Must not touch: broker state.
#![forbid(unsafe_code)]

/// The global allocator `main` installs (`#[global_allocator]`).
#[cfg(feature = "jemalloc")]
pub type Global = tikv_jemallocator::Jemalloc;

/// The global allocator `main` installs (`#[global_allocator]`): the system's, whose
/// allocations AddressSanitizer intercepts (the `jemalloc` feature is off).
#[cfg(not(feature = "jemalloc"))]
pub type Global = std::alloc::System;

/// What the allocator reports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorFigures {
    /// Bytes handed out to the program and not yet freed.
    pub allocated: u64,
    /// Bytes in pages the allocator holds resident (allocated + its own metadata + free
    /// pages not yet given back).
    pub resident: u64,
    /// Bytes in whole extents kept mapped for reuse but not resident (virtual only).
    pub retained: u64,
}

/// The allocator's current figures, or None if it cannot say (built without jemalloc). If
/// jemalloc is linked but another allocator is the global one, they describe jemalloc's
/// own small use.
#[cfg(feature = "jemalloc")]
pub fn allocator_figures() -> Option<AllocatorFigures> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot refreshed by advancing the epoch.
    epoch::advance().ok()?;
    Some(AllocatorFigures {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        retained: stats::retained::read().ok()? as u64,
    })
}

/// The allocator's current figures: None, the system allocator reports none.
#[cfg(not(feature = "jemalloc"))]
pub fn allocator_figures() -> Option<AllocatorFigures> {
    None
}

/// Whether the allocator purges freed memory from background threads.
#[cfg(feature = "jemalloc")]
pub fn background_purge() -> bool {
    tikv_jemalloc_ctl::background_thread::read().unwrap_or(false)
}

/// Whether the allocator purges freed memory from background threads: the system
/// allocator has no such threads.
#[cfg(not(feature = "jemalloc"))]
pub fn background_purge() -> bool {
    false
}

/// This process's resident set size in bytes (`VmRSS` of `/proc/self/status`), or None
/// where there is no such file.
pub fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    resident_kib(&status).map(|kib| kib * 1024)
}

/// The `VmRSS:` figure (KiB) of a `/proc/PID/status` text.
fn resident_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_size_is_parsed_from_status() {
        let status = "Name:\tshardmq\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(resident_kib(status), Some(4321));
        assert_eq!(resident_kib("Name:\tx\n"), None);
        assert_eq!(resident_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = process_resident_bytes().expect("/proc/self/status");
        assert!(rss > 0);
    }
}
