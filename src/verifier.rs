#![forbid(unsafe_code)]
//! The password-hashing worker: PBKDF2 and Argon2 run here, never on a shard loop.
//!
//! Owns: a few threads (`VERIFIER_THREADS_MAX` at most) that take [`Job`]s from one bounded
//! queue, run [`PasswordFile::verify`], and send each [`Answer`] back on the asking shard's
//! own channel, then ring that shard's doorbell (a `Fn()` the shard supplies, its mio
//! waker in the broker). Invariants: the job queue is bounded ([`VerifierPool::start`]'s
//! `queue_max`), so a storm of logins fails fast with [`Busy`] instead of growing memory;
//! each client has at most `pending_max` jobs in flight, so its answer channel is bounded
//! too; a job verifies against the `Arc<PasswordFile>` current when it was submitted, so a
//! reload never mixes files within one check. Must not touch: shard state, sockets,
//! packets. Sits right of `broker` in the dependency order because it owns threads; the
//! pure parts it calls are in [`crate::auth`].
//!
//! Cost: a `$7$` check with 1,000 iterations is about 1 ms of CPU; 101 iterations (files
//! from Mosquitto 2.0) about 0.1 ms. A per-shard [`crate::auth::VerifyCache`] answers
//! repeated successful logins without a job.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};

use crate::auth::{PasswordFile, Verdict};

/// Most worker threads.
pub const VERIFIER_THREADS_MAX: usize = 8;
/// Longest password accepted for verification (MQTT allows 65,535).
pub const VERIFY_PASSWORD_BYTES_MAX: usize = 65_535;

/// The doorbell a worker rings after queueing an answer.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// One check to run.
struct Job {
    token: u64,
    file: Arc<PasswordFile>,
    user: String,
    password: Vec<u8>,
    reply: Sender<Answer>,
    wake: Wake,
}

/// The result of one check, for the shard that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The caller's token (in the broker: the link's slab key and a connection serial).
    pub token: u64,
    /// The username checked.
    pub user: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The generation of the password file it was checked against.
    pub generation: u64,
}

/// The queue is full, or this client has too many checks in flight: refuse the login
/// (5.0: 0x89 Server busy; 3.x: 0x03 Server unavailable) rather than wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The worker threads and the sending end of their queue.
pub struct VerifierPool {
    jobs: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl VerifierPool {
    /// Start `threads` workers (1..=[`VERIFIER_THREADS_MAX`]) sharing a queue of
    /// `queue_max` jobs.
    pub fn start(threads: usize, queue_max: usize) -> std::io::Result<VerifierPool> {
        let (tx, rx) = bounded::<Job>(queue_max.max(1));
        let mut handles = Vec::new();
        for i in 0..threads.clamp(1, VERIFIER_THREADS_MAX) {
            let rx = rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("verifier-{i}"))
                .spawn(move || work(&rx))?;
            handles.push(handle);
        }
        Ok(VerifierPool {
            jobs: tx,
            threads: handles,
        })
    }

    /// A client for one shard: its own answer channel, its doorbell, and a bound on the
    /// checks it may have in flight.
    pub fn client(&self, wake: Wake, pending_max: usize) -> VerifierClient {
        let (reply, answers) = unbounded();
        VerifierClient {
            jobs: self.jobs.clone(),
            reply,
            answers,
            wake,
            pending: 0,
            pending_max: pending_max.max(1),
        }
    }

    /// Stop the workers once every client is dropped and the queue is drained; waits.
    pub fn join(self) {
        drop(self.jobs);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn work(rx: &Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        let verdict = job.file.verify(&job.user, &job.password);
        let answer = Answer {
            token: job.token,
            user: job.user,
            verdict,
            generation: job.file.generation(),
        };
        // The shard may be gone (shutting down): then nobody needs the answer.
        if job.reply.send(answer).is_ok() {
            (job.wake)();
        }
    }
}

/// One shard's handle on the pool. Not shared: the shard owns it.
pub struct VerifierClient {
    jobs: Sender<Job>,
    reply: Sender<Answer>,
    answers: Receiver<Answer>,
    wake: Wake,
    pending: usize,
    pending_max: usize,
}

impl VerifierClient {
    /// Queue a check of `password` for `user` against `file`; the answer comes back
    /// through [`VerifierClient::try_answer`] after the doorbell rings.
    pub fn submit(
        &mut self,
        token: u64,
        file: Arc<PasswordFile>,
        user: &str,
        password: &[u8],
    ) -> Result<(), Busy> {
        if self.pending >= self.pending_max || password.len() > VERIFY_PASSWORD_BYTES_MAX {
            return Err(Busy);
        }
        let job = Job {
            token,
            file,
            user: user.to_string(),
            password: password.to_vec(),
            reply: self.reply.clone(),
            wake: Arc::clone(&self.wake),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.pending += 1;
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// The next answer, if one is ready. Call in a bounded loop once per turn.
    pub fn try_answer(&mut self) -> Option<Answer> {
        let a = self.answers.try_recv().ok()?;
        self.pending = self.pending.saturating_sub(1);
        Some(a)
    }

    /// Checks submitted and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::passwd::Hash;
    use std::time::Duration;

    fn file() -> Arc<PasswordFile> {
        let h = Hash::new_pbkdf2(b"pw", 64, 1000).expect("hash");
        Arc::new(PasswordFile::parse(&format!("alice:{}\n", h.encode()), "t").expect("valid"))
    }

    /// A doorbell that a test can wait on.
    fn doorbell() -> (Wake, crossbeam_channel::Receiver<()>) {
        let (tx, rx) = unbounded();
        (
            Arc::new(move || {
                let _ = tx.send(());
            }),
            rx,
        )
    }

    /// Wait for `n` answers: each ring (within 10 s) means one answer is queued.
    fn answers(
        c: &mut VerifierClient,
        bell: &crossbeam_channel::Receiver<()>,
        n: usize,
    ) -> Vec<Answer> {
        (0..n)
            .map(|_| {
                bell.recv_timeout(Duration::from_secs(10))
                    .expect("a ring within 10 s");
                c.try_answer().expect("an answer behind every ring")
            })
            .collect()
    }

    #[test]
    fn answers_come_back_with_their_token_and_ring_the_doorbell() {
        let pool = VerifierPool::start(2, 16).expect("threads");
        let (bell, rings) = doorbell();
        let mut c = pool.client(bell, 8);
        let f = file();
        c.submit(1, Arc::clone(&f), "alice", b"pw").expect("queued");
        c.submit(2, Arc::clone(&f), "alice", b"nope")
            .expect("queued");
        c.submit(3, Arc::clone(&f), "bob", b"pw").expect("queued");
        let mut got: Vec<(u64, Verdict)> = answers(&mut c, &rings, 3)
            .into_iter()
            .map(|a| (a.token, a.verdict))
            .collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            vec![
                (1, Verdict::Ok),
                (2, Verdict::BadPassword),
                (3, Verdict::UnknownUser)
            ]
        );
        assert!(rings.try_recv().is_err(), "one ring per answer");
        assert_eq!(c.pending(), 0);
        drop(c);
        pool.join();
    }

    #[test]
    fn a_storm_is_refused_busy_not_queued_without_bound() {
        let pool = VerifierPool::start(1, 4).expect("threads");
        let (bell, rings) = doorbell();
        let mut c = pool.client(bell, 3);
        let f = file();
        let mut refused = 0;
        for t in 0..100 {
            if c.submit(t, Arc::clone(&f), "alice", b"x").is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 97, "at most pending_max in flight");
        let _ = answers(&mut c, &rings, 3);
        assert!(
            c.submit(200, f, "alice", b"x").is_ok(),
            "room again once answered"
        );
        let _ = answers(&mut c, &rings, 1);
        drop(c);
        pool.join();
    }
}
