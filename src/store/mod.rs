//! The store: one write-ahead log per shard, checkpoints, and recovery (issue 11).
//!
//! **Owns** the files under `<data_dir>/shard-<k>/`: append-only segments `NNNNNNNN.wal`
//! and one `checkpoint` file, plus `<data_dir>/incoming/` while a new shard layout is
//! being installed, and `<data_dir>/lock` (one broker per store). It knows records, not MQTT: the engine says what happened
//! ([`Record`]), the store makes it durable and hands it back after a crash.
//!
//! **Invariants kept:**
//! * Every record written gets an LSN, strictly increasing by one within a shard's log.
//!   Every record appended gets a ticket, strictly increasing by one; a record cancelled
//!   before its batch is written ([`Wal::cancel`]) takes no LSN. [`Wal::durable_lsn`] only
//!   ever reports a ticket whose record, and every record appended before it, has been
//!   `fdatasync`ed (or is covered by a synced checkpoint) or cancelled.
//! * The caller never waits on `fdatasync`: it runs on the log's sync thread, which
//!   reports through an atomic and a callback.
//! * Recovery returns the longest valid prefix of each log and reports every cut; it never
//!   returns a record whose checksum did not match.
//! * A segment is deleted only after a synced checkpoint covers all of its records, so
//!   disk use is bounded by the live state plus the log written since the last checkpoint.
//!
//! **Must not touch:** MQTT packets, sessions, the broker, mio or the shard loop. The
//! engine converts its state to and from [`Record`]s and passes a wake-up callback.
//!
//! Files are created with mode 0600. See `docs/decisions/0010-store.md`.
#![forbid(unsafe_code)]

pub mod disk;
pub mod frame;
pub mod hold;
pub mod layout;
pub mod lock;
pub mod reader;
pub mod record;
pub mod state;
pub mod wal;

#[cfg(test)]
pub(crate) mod testutil;

pub use disk::{Disk, OsDisk, SimDisk};
pub use frame::CutReason;
pub use hold::AckHold;
pub use layout::{
    install, install_on, recover_all, recover_all_on, recover_parts, recover_parts_on, CutReport,
    Recovered, RecoveredParts,
};
pub use lock::StoreLock;
pub use record::{
    BridgeOp, DecodeError, DeliveryHead, DeliveryKind, DeliveryState, MessageProps, MessageWriter,
    MsgId, Record, RetainSource, SessionInfo, StoredMessage, Subscription, Will, SHARE_SEQ_MASK,
};
pub use state::{
    ArmedWill, BridgeMsg, BridgeState, Deliveries, Delivery, LiveState, PendingWill, ReceivedIds,
    SessionSlot, SessionState, Sessions, SharedMessage, Subscriptions, CLUSTER_RECEIVED_MAX,
};
pub use wal::{Background, CheckpointPolicy, SyncMode, Wal, WalOptions};

/// Log sequence number: the position of a record in its shard's log, from 1.
pub type Lsn = u64;

/// The newest file format version, written in every segment and checkpoint header: frames
/// carry groups of records (`frame::FORMAT_GROUPED`). Segments and checkpoints of version 1
/// (one record per frame) are still read (`frame::FrameFormat`).
pub const FORMAT_VERSION: u16 = 2;

/// A store operation that failed.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O error, with what was being done.
    Io(&'static str, std::io::Error),
    /// The directory holds a log that must be recovered (and a layout installed) first.
    NeedsRecovery(std::path::PathBuf),
    /// Another running broker holds this data directory (its lock file).
    Locked(std::path::PathBuf),
    /// The sync thread failed an `fdatasync`: nothing after [`Wal::durable_lsn`] is durable
    /// and the log takes no more writes.
    SyncFailed,
    /// A store file in a format version this build does not read (written by a newer
    /// build): recovering around it would drop it and everything after it.
    Format(std::path::PathBuf, u16),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(what, e) => write!(f, "store: {what}: {e}"),
            StoreError::NeedsRecovery(p) => {
                write!(f, "store: {} holds a log; recover it first", p.display())
            }
            StoreError::Locked(p) => {
                write!(
                    f,
                    "store: {} is held by another running broker",
                    p.display()
                )
            }
            StoreError::SyncFailed => write!(f, "store: fdatasync failed; the log is closed"),
            StoreError::Format(p, v) => write!(
                f,
                "store: {} is in format version {v}, which this build does not read (it reads \
                 versions 1 and 2): a newer build wrote it; start that build on this store, or \
                 move the store aside to start empty",
                p.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// Attach what was being done to an I/O error.
pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Io(what, e)
}

/// Open a new file for writing with mode 0600, failing if it exists.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
