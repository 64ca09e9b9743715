//! The share-group sweep: every node looks, every `SWEEP_MS`, for share group queues
//! whose group has no member on any node in its interest view, and removes those that
//! stayed so for `GRACE_MS` (`groups`; `docs/cluster.md`, "Shared subscriptions at QoS
//! 1/2", *When the last member leaves*).
//!
//! Owns: the list of candidate groups and since when each has been one, on this node's
//! clock. Invariant: nothing is looked at before the view loaded the whole bucket once;
//! a group is a candidate only while its consumer exists and the view shows no member;
//! the removal itself is claimed and checked against the bucket (`groups::remove`), so
//! the view's lag never removes a group with members. Must not touch: the view (read
//! only), the link loop's state.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use super::super::groups::{self, Outcome};
use super::super::queue::{self, InterestView};
use super::super::subject::Prefix;
use super::super::LinkStats;
use super::FLUSH_WAIT_MS;

/// How often the share groups' consumers are listed.
pub(super) const SWEEP_MS: u64 = 1000;
/// How long a group must show no member anywhere before its queue is removed: a member
/// that leaves and subscribes again within it keeps the group's queue.
pub(super) const GRACE_MS: u64 = 3000;
/// Consumers of the share groups' stream looked at per sweep, at most.
const CONSUMERS_MAX: usize = 100_000;
/// Removals tried per sweep, at most (each a few JetStream requests).
const REMOVALS_PER_SWEEP_MAX: usize = 16;
/// Longest one removal may take.
const REMOVAL_WAIT_MS: u64 = 10_000;

/// What the sweep needs.
pub(super) struct Sweep {
    pub(super) js: jetstream::Context,
    pub(super) cluster: String,
    pub(super) prefix: Prefix,
    pub(super) node: String,
    pub(super) view: Arc<Mutex<InterestView>>,
    pub(super) claims: kv::Store,
    pub(super) stats: Arc<LinkStats>,
}

/// Sweep for the link's life.
pub(super) async fn sweeper(s: Sweep) {
    let mut since: HashMap<String, Instant> = HashMap::new();
    let mut unknown: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !s.view.lock().is_ok_and(|v| v.loaded()) {
            continue;
        }
        let Some(names) = consumers(&s).await else {
            LinkStats::add(&s.stats.nats_errors);
            continue;
        };
        let now = Instant::now();
        {
            let Ok(view) = s.view.lock() else {
                return;
            };
            since = names
                .into_iter()
                .filter(|n| queue::is_group(n) && !view.has_group(n) && !unknown.contains(n))
                .map(|n| {
                    let t = since.get(&n).copied().unwrap_or(now);
                    (n, t)
                })
                .collect();
        }
        let grace = Duration::from_millis(GRACE_MS);
        let due: Vec<String> = since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= grace)
            .map(|(n, _)| n.clone())
            .take(REMOVALS_PER_SWEEP_MAX)
            .collect();
        for qname in due {
            match remove(&s, &qname).await {
                Some(Outcome::Removed { purged }) => {
                    LinkStats::add(&s.stats.shared_removed);
                    eprintln!(
                        "cluster: share group queue {qname} removed: no member on any node \
                         for {GRACE_MS} ms ({purged} messages stored for it purged)"
                    );
                    since.remove(&qname);
                }
                Some(Outcome::Unknown) => {
                    unknown.insert(qname.clone());
                    since.remove(&qname);
                }
                // The view lags the bucket: look again after another grace.
                Some(Outcome::Members) => {
                    since.insert(qname, Instant::now());
                }
                // Gone, or another node removes it (its claim goes stale if it dies).
                Some(Outcome::Absent | Outcome::Claimed) => {}
                None => LinkStats::add(&s.stats.nats_errors),
            }
        }
    }
}

/// The consumers of the share groups' stream (none if it does not exist), bounded.
async fn consumers(s: &Sweep) -> Option<Vec<String>> {
    let list = async {
        let name = queue::shared_stream_name(&s.cluster);
        let stream = match s.js.get_stream(&name).await {
            Ok(stream) => stream,
            Err(e) => {
                return match e.kind() {
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Some(Vec::new())
                    }
                    _ => None,
                };
            }
        };
        let mut names = stream.consumer_names().take(CONSUMERS_MAX);
        let mut out = Vec::new();
        while let Some(n) = names.next().await {
            out.push(n.ok()?);
        }
        Some(out)
    };
    let wait = Duration::from_millis(FLUSH_WAIT_MS);
    tokio::time::timeout(wait, list).await.ok().flatten()
}

async fn remove(s: &Sweep, qname: &str) -> Option<Outcome> {
    let removal = groups::remove(
        &s.js,
        &s.cluster,
        &s.prefix,
        qname,
        Some(&s.claims),
        &s.node,
    );
    match tokio::time::timeout(Duration::from_millis(REMOVAL_WAIT_MS), removal).await {
        Ok(Ok(o)) => Some(o),
        Ok(Err(e)) => {
            eprintln!("cluster: removing share group queue {qname}: {e}");
            None
        }
        Err(_) => None,
    }
}
