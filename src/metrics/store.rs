//! What one shard's write-ahead log publishes about itself: write and `fdatasync` times,
//! group-commit batch sizes, checkpoints, bytes on disk.
//!
//! Owns: the figures, nothing else. Invariant: every field has exactly one writer: the
//! shard thread writes everything but `sync_time`, which the log's sync thread writes
//! (the two never write the same atomic); the admin thread only reads. Must not touch:
//! files, threads (the store fills these in; see `store::wal`).

use super::{Figure, Histogram};

/// Buckets of the write and `fdatasync` times, ns: 10 µs to 1 s (then +Inf).
pub const STORE_TIME_BUCKETS_NS: [u64; 14] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];
/// Buckets of records per group commit.
pub const BATCH_RECORDS_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096];
/// Buckets of bytes per group commit: 256 B to 4 MiB.
pub const BATCH_BYTES_BUCKETS: [u64; 8] = [
    256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304,
];
/// Buckets of the checkpoint duration, ns: 1 ms to 60 s.
pub const CHECKPOINT_BUCKETS_NS: [u64; 8] = [
    1_000_000,
    10_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    10_000_000_000,
    60_000_000_000,
];

/// One shard's log figures.
#[derive(Debug)]
pub struct StoreFigures {
    /// Time of each group commit's `write`, ns (shard).
    pub write_time: Histogram,
    /// Time of each `fdatasync` round, ns (sync thread).
    pub sync_time: Histogram,
    /// Records per group commit (shard).
    pub batch_records: Histogram,
    /// Bytes per group commit (shard).
    pub batch_bytes: Histogram,
    /// Duration of each finished checkpoint, from encoding to the old segments deleted, ns
    /// (shard, when it reaps the checkpoint).
    pub checkpoint_time: Histogram,
    /// Size of the latest checkpoint file, bytes (shard).
    pub checkpoint_bytes: Figure,
    /// Checkpoints that failed (shard).
    pub checkpoint_failures: Figure,
    /// Segments and checkpoint of this shard's directory, bytes (shard).
    pub disk_bytes: Figure,
}

impl Default for StoreFigures {
    fn default() -> Self {
        StoreFigures {
            write_time: Histogram::new(&STORE_TIME_BUCKETS_NS),
            sync_time: Histogram::new(&STORE_TIME_BUCKETS_NS),
            batch_records: Histogram::new(&BATCH_RECORDS_BUCKETS),
            batch_bytes: Histogram::new(&BATCH_BYTES_BUCKETS),
            checkpoint_time: Histogram::new(&CHECKPOINT_BUCKETS_NS),
            checkpoint_bytes: Figure::default(),
            checkpoint_failures: Figure::default(),
            disk_bytes: Figure::default(),
        }
    }
}
