//! One shard's write-ahead log: group commit on the shard, `fdatasync` on a sync thread.
//!
//! Owns: the shard directory's segment files while the broker runs, the in-memory batch of
//! the current loop turn, and the sync thread. The shard calls [`Wal::append`] during a
//! turn (encoding only), [`Wal::end_turn`] once at its end (the batch framed in groups of
//! records, one checksum per group, and one `write` of the whole batch), and reads
//! [`Wal::durable_lsn`] when the sync thread's callback wakes it.
//!
//! Invariants: segments hold whole batches, so a segment's header names its first LSN and
//! the segment before it holds every LSN below that. The sync thread learns of new
//! segments through a channel *before* the written LSN that needs them is published, and
//! syncs the previous segment and the directory before moving on, so "durable up to L"
//! covers every file holding an LSN ≤ L. After a failed `fdatasync` the durable LSN never
//! moves again ([`Wal::failed`]). The log publishes its figures (write and sync times,
//! batch sizes, checkpoints, bytes on disk) into a [`StoreFigures`] with one writer per
//! field: the shard thread, or the sync thread for the sync time. Must not touch: anything
//! outside its shard directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::disk::{Disk, DiskFile, OsDisk};
use super::frame::{
    begin_group, member_bytes, push_member, seal_group, FileHeader, FileKind, GroupPacker,
    FILE_HEADER_BYTES, FRAME_BODY_BYTES_MAX, GROUP_BODY_BYTES_MAX,
};
use super::record::{DecodeError, DeliveryHead, Record};
use super::{io, Lsn, StoreError};
use crate::metrics::StoreFigures;

/// Default segment size before rolling to a new file, bytes.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The sync thread rechecks for work at least this often, even without a wake-up.
const SYNC_PARK_MS: u64 = 100;
/// [`Wal::end_turn_unless_syncing`] writes a batch this large even while a sync runs.
const DEFER_BYTES_MAX: usize = 1024 * 1024;
/// File name of a shard's checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";

/// When records count as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After `fdatasync` (survives power loss). The default.
    Always,
    /// After `write` (survives `kill -9`, not power loss).
    Never,
}

/// When to write a checkpoint: whichever bound is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Log bytes written since the last checkpoint.
    pub log_bytes_max: u64,
    /// Time since the last checkpoint, seconds (`autosave_interval`); 0 = by size only.
    pub interval_s: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            log_bytes_max: 4 * SEGMENT_BYTES_DEFAULT,
            interval_s: 300,
        }
    }
}

/// Who runs the log's background work (`fdatasync`, checkpoint writing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Background {
    /// A sync thread and a checkpoint thread per log (the broker).
    #[default]
    Threads,
    /// The caller, through [`Wal::sync_step`] and [`Wal::run_background`]: the
    /// deterministic simulation decides when a sync or a checkpoint write happens.
    Manual,
}

/// How a log is run.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Roll to a new segment once one reaches this size, bytes.
    pub segment_bytes_max: u64,
    /// `fdatasync` or not.
    pub sync: SyncMode,
    /// Checkpoint policy.
    pub checkpoint: CheckpointPolicy,
    /// Threads, or the caller.
    pub background: Background,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            sync: SyncMode::Always,
            checkpoint: CheckpointPolicy::default(),
            background: Background::Threads,
        }
    }
}

/// What the shard and its sync thread share: three atomics.
struct Shared {
    written: AtomicU64,
    durable: AtomicU64,
    failed: AtomicBool,
    stop: AtomicBool,
    /// The sync thread writes `sync_time` only.
    figures: Arc<StoreFigures>,
}

/// A segment the sync thread must switch to, after syncing the current one.
struct Roll {
    file: Box<dyn DiskFile>,
}

/// Background work of a checkpoint: write, sync, rename, delete covered segments (returns
/// the bytes they held).
type CheckpointWork = Box<dyn FnOnce() -> Result<u64, StoreError> + Send>;

/// A checkpoint being written.
enum Job {
    /// On its own thread.
    Thread(JoinHandle<Result<u64, StoreError>>),
    /// Waiting for [`Wal::run_background`] (manual mode).
    Deferred(CheckpointWork),
    /// Run by [`Wal::run_background`], with its result.
    Done(Result<u64, StoreError>),
}

/// What the sync thread does, also run by hand in manual mode.
struct Syncer {
    disk: Arc<dyn Disk>,
    file: Box<dyn DiskFile>,
    rolls: crossbeam_channel::Receiver<Roll>,
    dir: PathBuf,
    synced: Lsn,
}

/// One round of the syncer.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Idle,
    Advanced,
    Failed,
}

impl Syncer {
    /// If the written LSN passed the synced one: switch through any new segments (syncing
    /// each one left), `fdatasync` the current one, publish the LSN.
    fn step(&mut self, shared: &Shared) -> Progress {
        let written = shared.written.load(Ordering::Acquire);
        if written <= self.synced || shared.failed.load(Ordering::Acquire) {
            return Progress::Idle;
        }
        let began = Instant::now();
        let result = sync_through(&*self.disk, &mut self.file, &self.rolls, &self.dir);
        shared.figures.sync_time.observe(nanos(began.elapsed()));
        if result.is_err() {
            shared.failed.store(true, Ordering::Release);
            return Progress::Failed;
        }
        self.synced = written;
        shared.durable.store(written, Ordering::Release);
        Progress::Advanced
    }
}

/// The file name of segment number `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:08}.wal")
}

/// The segment number of a file name, if it is one.
pub fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The sorted segment numbers in `dir`.
pub fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for (name, _) in disk.list(dir).map_err(io("list shard directory"))? {
        if let Some(n) = segment_number(&name) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// One record of the unwritten batch.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where its encoding starts in the batch (it ends where the next one starts).
    start: usize,
    /// Not taken back by [`Wal::cancel`].
    live: bool,
    /// Framed in the same group as the live record before it ([`Wal::join_from`]): a
    /// torn write keeps both or neither.
    joined: bool,
}

/// One shard's log, owned by the shard thread.
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    opts: WalOptions,
    file: Box<dyn DiskFile>,
    segment_no: u64,
    segment_bytes: u64,
    /// This turn's (or these turns') record encodings, back to back, not yet framed.
    batch: Vec<u8>,
    /// Where each record of `batch` starts, and whether it is still live; record `i` is
    /// ticket `next_ticket - len + i`.
    slots: Vec<Slot>,
    /// Records of `batch` taken back ([`Wal::cancel`]).
    cancelled: usize,
    /// The live records of `batch` framed in groups and sealed: what a write writes.
    out: Vec<u8>,
    /// The ticket the next [`Wal::append`] returns.
    next_ticket: Lsn,
    /// The LSN the next frame written gets in the file.
    next_lsn: Lsn,
    /// The LSN of the last frame written to the file.
    written_file_lsn: Lsn,
    shared: Arc<Shared>,
    rolls: crossbeam_channel::Sender<Roll>,
    sync_thread: Option<JoinHandle<()>>,
    /// The syncer, in manual mode.
    manual: Option<Syncer>,
    log_bytes_since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpoint_job: Option<Job>,
    /// When the running checkpoint started, and the size of its file.
    checkpoint_started: (Instant, u64),
    /// Bytes of the segments and the checkpoint file in `dir`.
    disk_bytes: u64,
    /// Bytes of the checkpoint file in `dir`.
    checkpoint_file_bytes: u64,
}

impl Wal {
    /// Open the log in `dir`, which holds at most a checkpoint (a freshly installed layout,
    /// see [`super::install`]); logging continues after the checkpoint's LSN. `on_durable`
    /// runs on the sync thread each time [`Wal::durable_lsn`] advances (the shard passes
    /// its waker). A directory that still holds segments is refused: recover it first.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        on_durable: impl Fn() + Send + 'static,
    ) -> Result<Wal, StoreError> {
        Wal::open_on(Arc::new(OsDisk), dir, opts, on_durable)
    }

    /// [`Wal::open`] on `disk`.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        opts: WalOptions,
        on_durable: impl Fn() + Send + 'static,
    ) -> Result<Wal, StoreError> {
        disk.create_dir_all(dir).map_err(io("create directory"))?;
        if !list_segments(&*disk, dir)?.is_empty() {
            return Err(StoreError::NeedsRecovery(dir.to_path_buf()));
        }
        let start = checkpoint_lsn(&*disk, dir)?;
        let checkpoint_file_bytes = disk.len(&dir.join(CHECKPOINT_FILE)).unwrap_or(0);
        let shared = Arc::new(Shared {
            written: AtomicU64::new(start),
            durable: AtomicU64::new(start),
            failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            figures: Arc::new(StoreFigures::default()),
        });
        shared.figures.checkpoint_bytes.set(checkpoint_file_bytes);
        let segment_no = 1;
        let file = new_segment(&*disk, dir, segment_no, start + 1)?;
        disk.sync_dir(dir).map_err(io("fsync directory"))?;
        let (rolls, roll_rx) = crossbeam_channel::unbounded();
        let syncer = Syncer {
            disk: disk.clone(),
            file: file.try_clone().map_err(io("clone segment handle"))?,
            rolls: roll_rx,
            dir: dir.to_path_buf(),
            synced: start,
        };
        let (sync_thread, manual) = match (opts.sync, opts.background) {
            (SyncMode::Never, _) => (None, None),
            (SyncMode::Always, Background::Manual) => (None, Some(syncer)),
            (SyncMode::Always, Background::Threads) => {
                let s = Arc::clone(&shared);
                let t = std::thread::Builder::new()
                    .name("shardmq-sync".into())
                    .spawn(move || sync_loop(&s, syncer, &on_durable))
                    .map_err(io("spawn sync thread"))?;
                (Some(t), None)
            }
        };
        Ok(Wal {
            disk,
            dir: dir.to_path_buf(),
            opts,
            file,
            segment_no,
            segment_bytes: FILE_HEADER_BYTES as u64,
            batch: Vec::new(),
            slots: Vec::new(),
            cancelled: 0,
            out: Vec::new(),
            next_ticket: start + 1,
            next_lsn: start + 1,
            written_file_lsn: start,
            shared,
            rolls,
            sync_thread,
            manual,
            log_bytes_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpoint_job: None,
            checkpoint_started: (Instant::now(), 0),
            disk_bytes: checkpoint_file_bytes + FILE_HEADER_BYTES as u64,
            checkpoint_file_bytes,
        }
        .published())
    }

    /// `self`, with its starting figures published.
    fn published(self) -> Wal {
        self.shared.figures.disk_bytes.set(self.disk_bytes);
        self
    }

    /// This log's figures, for the metrics board (read them; only the log writes them).
    pub fn figures(&self) -> Arc<StoreFigures> {
        Arc::clone(&self.shared.figures)
    }

    /// Manual mode: run one round of the sync thread's work now. True if the durable LSN
    /// moved (or the sync failed: see [`Wal::failed`]).
    pub fn sync_step(&mut self) -> bool {
        match self.manual.as_mut() {
            Some(s) => s.step(&self.shared) != Progress::Idle,
            None => false,
        }
    }

    /// Manual mode: run a checkpoint write that waits for it, if any. True if one ran.
    pub fn run_background(&mut self) -> bool {
        match self.checkpoint_job.take() {
            Some(Job::Deferred(work)) => {
                self.checkpoint_job = Some(Job::Done(work()));
                true
            }
            other => {
                self.checkpoint_job = other;
                false
            }
        }
    }

    /// Add `record` to this turn's batch and return its ticket. Encoding only: no I/O, no
    /// frame and no checksum (the batch is framed in groups when written). Tickets count
    /// appends, from the checkpoint's LSN on; [`Wal::durable_lsn`] and [`Wal::last_lsn`]
    /// are in tickets. They are the records' LSNs in the file as long as nothing is
    /// cancelled; a cancelled record takes no LSN, so the file's LSNs stay consecutive.
    pub fn append(&mut self, record: &Record<'_>) -> Lsn {
        self.append_with(|out| record.encode(out))
    }

    /// [`Wal::append`] a record that `encode` appends to the batch itself (exactly one
    /// record body: a [`MessageWriter`](super::MessageWriter) writing from the caller's
    /// own types, with no [`Record`] built first).
    pub fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Lsn {
        let ticket = self.next_ticket;
        self.slots.push(Slot {
            start: self.batch.len(),
            live: true,
            joined: false,
        });
        encode(&mut self.batch);
        self.next_ticket += 1;
        ticket
    }

    /// Bind the unwritten records appended since ticket `first` (the ticket
    /// [`Wal::next_ticket`] gave before them) into one group with `first`, so no torn
    /// write of their batch keeps some of them without the others: for a run of records
    /// whose prefix alone would mean something else at recovery (a delivery queued again
    /// and its old place dropped: both, or the old place alone). The group may then pass
    /// [`GROUP_BODY_BYTES_MAX`]; such runs are a few delivery records.
    pub fn join_from(&mut self, first: Lsn) {
        // Slots are tickets `next_ticket - len ..`; one written already starts the run at
        // the batch's first record.
        let oldest = self.next_ticket - self.slots.len() as u64;
        let from = usize::try_from(first.saturating_sub(oldest)).unwrap_or(usize::MAX);
        for slot in self.slots.iter_mut().skip(from.saturating_add(1)) {
            slot.joined = true;
        }
    }

    /// The ticket the next appended record gets.
    pub fn next_ticket(&self) -> Lsn {
        self.next_ticket
    }

    /// Take back record `ticket` if it is still unwritten: it is never written, and its
    /// ticket counts as durable with the batch around it. The caller must only cancel a
    /// set of records whose net effect on recovery is nothing (see
    /// `docs/persistence.md`, "Records that cancel"). False if it was written already.
    pub fn cancel(&mut self, ticket: Lsn) -> bool {
        let Some(slot) = self.slot(ticket).filter(|&i| self.slots[i].live) else {
            return false;
        };
        self.slots[slot].live = false;
        self.cancelled += 1;
        true
    }

    /// The index in `slots` of unwritten record `ticket`.
    fn slot(&self, ticket: Lsn) -> Option<usize> {
        let i = usize::try_from(ticket.checked_sub(self.unwritten_tickets().start)?).ok()?;
        (i < self.slots.len()).then_some(i)
    }

    /// The tickets of the records appended and not yet written (cancelled ones included).
    pub fn unwritten_tickets(&self) -> std::ops::Range<Lsn> {
        self.next_ticket - self.slots.len() as u64..self.next_ticket
    }

    /// Record `ticket` read back from the unwritten batch (borrowed, no copy); `None` if
    /// it was written already, cancelled, or never appended. For the journal's records
    /// that cancel, which look at the batch only once one might (`broker::journal::elide`).
    pub fn unwritten(&self, ticket: Lsn) -> Option<Result<Record<'_>, DecodeError>> {
        let i = self.slot(ticket).filter(|&i| self.slots[i].live)?;
        Some(Record::decode(self.batch.get(self.encoding(i))?))
    }

    /// The delivery fields of unwritten record `ticket` ([`DeliveryHead`]), read without
    /// decoding the rest; `None` as [`Wal::unwritten`], or for a record that is no
    /// delivery.
    pub fn unwritten_head(&self, ticket: Lsn) -> Option<DeliveryHead<'_>> {
        let i = self.slot(ticket).filter(|&i| self.slots[i].live)?;
        DeliveryHead::read(self.batch.get(self.encoding(i))?)
    }

    /// Where record `i` of the batch lies in `batch`.
    fn encoding(&self, i: usize) -> std::ops::Range<usize> {
        let end = self.slots.get(i + 1).map_or(self.batch.len(), |s| s.start);
        self.slots[i].start..end
    }

    /// The ticket of the last record appended (0 before any).
    pub fn last_lsn(&self) -> Lsn {
        self.next_ticket - 1
    }

    /// The file LSN of the last record written (what a checkpoint taken now covers).
    pub fn written_file_lsn(&self) -> Lsn {
        self.written_file_lsn
    }

    /// Bytes appended and not yet written.
    pub fn batch_bytes(&self) -> usize {
        self.batch.len()
    }

    /// Whether a batch written earlier still waits for its `fdatasync`.
    pub fn syncing(&self) -> bool {
        self.opts.sync == SyncMode::Always
            && !self.failed()
            && self.shared.durable.load(Ordering::Acquire)
                < self.shared.written.load(Ordering::Acquire)
    }

    /// Whether [`Wal::end_turn_unless_syncing`] would keep the batch in memory now: a
    /// batch written before still waits for its `fdatasync` and this one is under
    /// [`DEFER_BYTES_MAX`]. Written now, it would not be durable sooner (the sync thread
    /// syncs one batch after the other), and kept, its records can still be cancelled;
    /// the sync thread's callback wakes the shard, whose next turn writes it.
    pub fn will_defer(&self) -> bool {
        self.syncing() && self.batch.len() < DEFER_BYTES_MAX
    }

    /// [`Wal::end_turn`], unless [`Wal::will_defer`]. True if it wrote (or had nothing
    /// to write).
    pub fn end_turn_unless_syncing(&mut self) -> Result<bool, StoreError> {
        if self.will_defer() {
            return Ok(false);
        }
        self.end_turn().map(|()| true)
    }

    /// End of a loop turn: write the batch with one `write` (rolling the segment first if
    /// it would pass its size), then hand its LSN to the sync thread. On an error (ENOSPC)
    /// the file is cut back to where it was and the batch kept for the next call, so no ack
    /// waiting on it is ever released; the caller should refuse new QoS > 0 work meanwhile.
    pub fn end_turn(&mut self) -> Result<(), StoreError> {
        if self.failed() {
            return Err(StoreError::SyncFailed);
        }
        if self.slots.is_empty() {
            return Ok(());
        }
        let (live, end_lsn) = self.seal();
        let len = self.out.len() as u64;
        let header = FILE_HEADER_BYTES as u64;
        if len > 0
            && self.segment_bytes > header
            && self.segment_bytes + len > self.opts.segment_bytes_max
        {
            self.roll()?;
        }
        let began = Instant::now();
        if len > 0 {
            if let Err(e) = self.file.append(&self.out) {
                // O_APPEND: the next write lands at the end, so a partial frame must go first.
                let _ = self.file.set_len(self.segment_bytes);
                return Err(StoreError::Io("write log batch", e));
            }
        }
        self.segment_bytes += len;
        self.log_bytes_since_checkpoint += len;
        self.next_lsn = end_lsn;
        self.written_file_lsn = end_lsn - 1;
        self.batch.clear();
        self.slots.clear();
        self.out.clear();
        self.cancelled = 0;
        self.record_batch(began, len, live);
        let written = self.last_lsn();
        match self.opts.sync {
            SyncMode::Always => {
                self.shared.written.store(written, Ordering::Release);
                if let Some(t) = &self.sync_thread {
                    t.thread().unpark();
                }
            }
            SyncMode::Never => self.shared.durable.store(written, Ordering::Release),
        }
        Ok(())
    }

    /// Frame the batch's live records into `out`: groups of up to
    /// [`GROUP_BODY_BYTES_MAX`] bytes (a larger record alone), each sealed with its first
    /// record's LSN and its checksum. Returns (live records, the LSN after them). The
    /// batch stays as it is until written, so a write that fails is framed again (with
    /// the same LSNs, unless records were cancelled meanwhile) and retried.
    fn seal(&mut self) -> (u64, Lsn) {
        self.out.clear();
        let mut lsn = self.next_lsn;
        // The open group: where it starts in `out`, its first LSN, its body's bytes.
        let mut open: Option<(usize, Lsn, usize)> = None;
        for i in 0..self.slots.len() {
            if !self.slots[i].live {
                continue;
            }
            let body = self.encoding(i);
            let need = member_bytes(body.len());
            if let Some((at, first, used)) = open {
                let joined = self.slots[i].joined && used + need <= FRAME_BODY_BYTES_MAX / 2;
                if used + need <= GROUP_BODY_BYTES_MAX || joined {
                    open = Some((at, first, used + need));
                } else {
                    seal_group(&mut self.out[at..], first);
                    open = None;
                }
            }
            if open.is_none() {
                open = Some((begin_group(&mut self.out), lsn, need));
            }
            push_member(&mut self.out, &self.batch[body]);
            lsn += 1;
        }
        if let Some((at, first, _)) = open {
            seal_group(&mut self.out[at..], first);
        }
        (lsn - self.next_lsn, lsn)
    }

    /// Publish the figures of a batch written with one `write` that began at `began`.
    fn record_batch(&mut self, began: Instant, len: u64, records: u64) {
        let f = &self.shared.figures;
        f.write_time.observe(nanos(began.elapsed()));
        f.batch_records.observe(records);
        f.batch_bytes.observe(len);
        self.disk_bytes += len;
        f.disk_bytes.set(self.disk_bytes);
    }

    /// Start segment `segment_no + 1` at the next LSN to be written.
    fn roll(&mut self) -> Result<(), StoreError> {
        // Batches are whole in a segment: the new one starts after the last written LSN.
        let first = self.written_file_lsn + 1;
        let n = self.segment_no + 1;
        let file = new_segment(&*self.disk, &self.dir, n, first)?;
        if self.opts.sync == SyncMode::Always {
            let clone = file.try_clone().map_err(io("clone segment handle"))?;
            // The receiver lives as long as the sync thread; if it is gone the log has
            // failed and `failed()` says so on the next call.
            let _ = self.rolls.send(Roll { file: clone });
        }
        self.file = file;
        self.segment_no = n;
        self.segment_bytes = FILE_HEADER_BYTES as u64;
        self.disk_bytes += FILE_HEADER_BYTES as u64;
        self.shared.figures.disk_bytes.set(self.disk_bytes);
        Ok(())
    }

    /// Every record with a ticket ≤ this is durable (or was cancelled). Read it when the
    /// callback fires.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Whether an `fdatasync` failed: the durable LSN will not move again.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Whether the checkpoint policy asks for a checkpoint now (and none is running).
    pub fn checkpoint_due(&self, now: Instant) -> bool {
        let p = self.opts.checkpoint;
        let by_time =
            p.interval_s > 0 && now.duration_since(self.last_checkpoint).as_secs() >= p.interval_s;
        self.checkpoint_job.is_none()
            && self.log_bytes_since_checkpoint > 0
            && (self.log_bytes_since_checkpoint >= p.log_bytes_max || by_time)
    }

    /// Log bytes written since the last checkpoint began.
    pub fn log_bytes_since_checkpoint(&self) -> u64 {
        self.log_bytes_since_checkpoint
    }

    /// Start a checkpoint of `live`, the records describing the engine's whole state as of
    /// [`Wal::last_lsn`] (call it between turns, after [`Wal::end_turn`]). Encoding happens
    /// here; writing, `fsync`, rename and deleting the segments it covers happen on a
    /// background thread. Returns `Ok(false)` if one is still running or the batch is not
    /// empty (nothing done).
    pub fn checkpoint<'r>(
        &mut self,
        live: impl IntoIterator<Item = Record<'r>>,
    ) -> Result<bool, StoreError> {
        self.poll_checkpoint()?;
        if self.checkpoint_job.is_some() || !self.slots.is_empty() {
            return Ok(false);
        }
        let began = Instant::now();
        let upto = self.written_file_lsn;
        let bytes = encode_checkpoint(upto, live);
        self.checkpoint_started = (began, bytes.len() as u64);
        // Segments below the one the next write goes to hold only LSNs ≤ upto.
        if self.segment_bytes > FILE_HEADER_BYTES as u64 {
            self.roll()?;
        }
        let keep_from = self.segment_no;
        let (dir, disk) = (self.dir.clone(), self.disk.clone());
        let work: CheckpointWork = Box::new(move || {
            write_checkpoint(&*disk, &dir, &bytes)?;
            delete_segments_before(&*disk, &dir, keep_from)
        });
        let job = match self.opts.background {
            Background::Manual => Job::Deferred(work),
            Background::Threads => Job::Thread(
                std::thread::Builder::new()
                    .name("shardmq-checkpoint".into())
                    .spawn(work)
                    .map_err(io("spawn checkpoint thread"))?,
            ),
        };
        self.checkpoint_job = Some(job);
        self.log_bytes_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(true)
    }

    /// Whether a checkpoint is running; reaps a finished one and returns its error, if any.
    pub fn poll_checkpoint(&mut self) -> Result<bool, StoreError> {
        match self.checkpoint_job.take() {
            Some(Job::Thread(job)) if job.is_finished() => {
                let result = match job.join() {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Io(
                        "checkpoint thread",
                        std::io::Error::other("panicked"),
                    )),
                };
                self.record_checkpoint(result.as_ref().ok().copied());
                result.map(|_| false)
            }
            Some(Job::Done(result)) => {
                self.record_checkpoint(result.as_ref().ok().copied());
                result.map(|_| false)
            }
            Some(job) => {
                self.checkpoint_job = Some(job);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Publish the figures of a checkpoint that finished, having deleted segments of
    /// `deleted` bytes, or failed (`None`).
    fn record_checkpoint(&mut self, deleted: Option<u64>) {
        let f = &self.shared.figures;
        let Some(deleted) = deleted else {
            f.checkpoint_failures.set(f.checkpoint_failures.get() + 1);
            return;
        };
        let (began, size) = self.checkpoint_started;
        f.checkpoint_time.observe(nanos(began.elapsed()));
        f.checkpoint_bytes.set(size);
        self.disk_bytes = (self.disk_bytes + size)
            .saturating_sub(deleted)
            .saturating_sub(std::mem::replace(&mut self.checkpoint_file_bytes, size));
        f.disk_bytes.set(self.disk_bytes);
    }

    /// Wait (up to `timeout`) until the running checkpoint, if any, finishes.
    pub fn wait_checkpoint(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + timeout;
        while self.poll_checkpoint()? {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(true)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Best effort at shutdown: write what is batched, let the sync thread sync it.
        let _ = self.end_turn();
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.sync_thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(Job::Thread(job)) = self.checkpoint_job.take() {
            let _ = job.join();
        }
    }
}

/// The sync thread: run the syncer whenever woken and call back each time the durable LSN
/// moves. Exits on stop once everything written is synced, or on the first failure.
fn sync_loop(shared: &Shared, mut syncer: Syncer, on_durable: &dyn Fn()) {
    loop {
        match syncer.step(shared) {
            Progress::Advanced => on_durable(),
            Progress::Failed => {
                on_durable();
                return;
            }
            Progress::Idle => {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(SYNC_PARK_MS));
            }
        }
    }
}

fn sync_through(
    disk: &dyn Disk,
    file: &mut Box<dyn DiskFile>,
    rolls: &crossbeam_channel::Receiver<Roll>,
    dir: &Path,
) -> Result<(), StoreError> {
    let mut rolled = false;
    while let Ok(next) = rolls.try_recv() {
        file.sync_data().map_err(io("fdatasync segment"))?;
        *file = next.file;
        rolled = true;
    }
    if rolled {
        disk.sync_dir(dir).map_err(io("fsync directory"))?;
    }
    file.sync_data().map_err(io("fdatasync segment"))
}

/// Create segment `n` whose first record will be `first_lsn`, with its header written.
fn new_segment(
    disk: &dyn Disk,
    dir: &Path,
    n: u64,
    first_lsn: Lsn,
) -> Result<Box<dyn DiskFile>, StoreError> {
    let path = dir.join(segment_name(n));
    let mut f = disk.create_new(&path).map_err(io("create segment"))?;
    let header = FileHeader {
        kind: FileKind::Segment,
        lsn: first_lsn,
    };
    if let Err(e) = f.append(&header.encode()) {
        // A segment without its header would be a cut at recovery: leave none behind.
        let _ = disk.remove_file(&path);
        return Err(StoreError::Io("write segment header", e));
    }
    Ok(f)
}

/// The LSN the checkpoint in `dir` covers, or 0 without one.
fn checkpoint_lsn(disk: &dyn Disk, dir: &Path) -> Result<Lsn, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    // Only its header: the checkpoint may be as big as the whole state.
    let mut head = [0u8; FILE_HEADER_BYTES];
    match disk.read_at(&path, 0, &mut head) {
        Ok(n) => match FileHeader::decode(&head[..n]) {
            Ok(h) if h.kind == FileKind::Checkpoint => Ok(h.lsn),
            _ => Err(StoreError::NeedsRecovery(dir.to_path_buf())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io("open checkpoint", e)),
    }
}

/// A checkpoint file's bytes: a header naming `upto`, then the records packed in groups
/// as the log's are, with LSNs 1, 2, … (their own sequence, so a torn or flipped
/// checkpoint is caught like a log).
pub fn encode_checkpoint<'r>(upto: Lsn, live: impl IntoIterator<Item = Record<'r>>) -> Vec<u8> {
    let header = FileHeader {
        kind: FileKind::Checkpoint,
        lsn: upto,
    };
    let mut bytes = header.encode().to_vec();
    let mut packer = GroupPacker::new(1);
    for r in live {
        packer.push(&mut bytes, &r);
    }
    packer.seal(&mut bytes);
    bytes
}

/// Write a checkpoint: temporary file, `fsync`, rename over the old one, `fsync` the
/// directory. A crash at any point leaves the old checkpoint or the new one, whole.
pub fn write_checkpoint(disk: &dyn Disk, dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(CHECKPOINT_TMP_FILE);
    let _ = disk.remove_file(&tmp);
    let mut f = disk.create_new(&tmp).map_err(io("create checkpoint"))?;
    f.append(bytes).map_err(io("write checkpoint"))?;
    f.sync_all().map_err(io("fsync checkpoint"))?;
    disk.rename(&tmp, &dir.join(CHECKPOINT_FILE))
        .map_err(io("rename checkpoint"))?;
    disk.sync_dir(dir).map_err(io("fsync directory"))
}

/// Delete every segment numbered below `keep_from` (a synced checkpoint covers them);
/// returns the bytes they held.
fn delete_segments_before(disk: &dyn Disk, dir: &Path, keep_from: u64) -> Result<u64, StoreError> {
    let mut freed = 0;
    for n in list_segments(disk, dir)? {
        if n < keep_from {
            let path = dir.join(segment_name(n));
            freed += disk.len(&path).unwrap_or(0);
            disk.remove_file(&path).map_err(io("delete segment"))?;
        }
    }
    disk.sync_dir(dir).map_err(io("fsync directory"))?;
    Ok(freed)
}

/// A duration in ns, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
