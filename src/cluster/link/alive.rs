//! The heartbeat, and the automatic removal of a node that has gone silent
//! (`cluster_forget_after`; `docs/cluster.md`, "Removing a silent node automatically";
//! `docs/decisions/0016-cluster-forget-after.md`).
//!
//! Owns: this node's key in the heartbeat bucket (`smq_<cluster>_nodes`), rewritten every
//! beat period by compare-and-set on its last revision; the watch of every node's key
//! with the instant it last changed, on this node's clock; the removal of a node silent
//! past the limit. Invariants: a node is removed only by the one observer whose
//! compare-and-set moved the node's key from the very revision the observer saw go silent
//! to `forgetting <observer>`, and only after NATS answered "no responders" on the node's
//! control subjects; silence is only judged over a stretch in which the observer's own
//! connection, watch and heartbeat all held; a node never overwrites a `forgetting` value
//! of its own key (the removal is under way) and, after a `forgotten` one, joins again
//! (heartbeat, interest entries rewritten). Must not touch: the session registry, the
//! subscriptions bucket, the queued messages of a removed node (kept: `Queued::Keep`).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::super::forget::{self, ForgetError, Queued};
use super::super::subject::{valid_cluster_name, Prefix};
use super::super::{LinkStats, NodeSeen};
use super::tasks::InterestOp;
use super::{Out, FLUSH_WAIT_MS};

/// The beat period when `cluster_forget_after` is off (others may have it on).
const BEAT_PERIOD_MS_MAX: u64 = 5000;
/// The shortest beat period, whatever the limit.
const BEAT_PERIOD_MS_MIN: u64 = 100;
/// Beats per `cluster_forget_after`: three may be missed (a slow JetStream write, a
/// leader election) before the fourth decides.
const BEATS_PER_LIMIT: u32 = 4;
/// A silent node is judged against at least this many of its own beat periods (it may
/// beat slower than this node's limit assumes: another configuration).
const MISSED_BEATS_MIN: u32 = 3;
/// Longest a removal may take (the liveness probe, listing the interest bucket, deletes).
/// A `forgetting` value older than the limit plus this is taken up again by any observer,
/// and the node itself stops waiting for it and joins again.
pub(crate) const REMOVAL_WAIT_MS: u64 = 120_000;
/// Pause between attempts of a removal whose step failed.
const REMOVAL_RETRY_MS: u64 = 1000;
/// Attempts (one beat period apart) to mark a removed node `forgotten`.
const MARK_ATTEMPTS_MAX: usize = 8;
/// Nodes tracked, at most; keys past it are ignored.
const NODES_MAX: usize = 4096;
/// Beat periods the watch may lag behind this node's own beats before it is made anew:
/// two limits' worth (a loaded machine delays deliveries by seconds).
const WATCH_LAG_TICKS_MAX: u32 = 2 * BEATS_PER_LIMIT;
/// Removals running at once, at most.
const REMOVALS_MAX: usize = 4;

/// What a heartbeat key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Beat {
    /// The node beats every `period_ms`.
    Alive { period_ms: u64 },
    /// Node `by` is removing it.
    Forgetting { by: String },
    /// Node `by` removed it.
    Forgotten { by: String },
}

impl Beat {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(match self {
            Beat::Alive { period_ms } => format!("alive {period_ms}"),
            Beat::Forgetting { by } => format!("forgetting {by}"),
            Beat::Forgotten { by } => format!("forgotten {by}"),
        })
    }

    pub(crate) fn parse(value: &[u8]) -> Option<Beat> {
        let text = std::str::from_utf8(value).ok()?;
        let (what, arg) = text.split_once(' ')?;
        match what {
            "alive" => arg.parse().ok().map(|period_ms| Beat::Alive { period_ms }),
            "forgetting" if valid_cluster_name(arg) => Some(Beat::Forgetting { by: arg.into() }),
            "forgotten" if valid_cluster_name(arg) => Some(Beat::Forgotten { by: arg.into() }),
            _ => None,
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Beat::Alive { .. } => "alive",
            Beat::Forgetting { .. } => "forgetting",
            Beat::Forgotten { .. } => "forgotten",
        }
    }
}

/// The beat period for a limit (`None`: the feature is off here).
pub(crate) fn beat_period(forget_after: Option<Duration>) -> Duration {
    let ms = forget_after.map_or(BEAT_PERIOD_MS_MAX, |d| {
        let per = d.as_millis() / u128::from(BEATS_PER_LIMIT);
        u64::try_from(per).unwrap_or(u64::MAX)
    });
    Duration::from_millis(ms.clamp(BEAT_PERIOD_MS_MIN, BEAT_PERIOD_MS_MAX))
}

/// A node's key as last seen: its revision, what it says, and when it changed.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) revision: u64,
    pub(crate) beat: Beat,
    pub(crate) at: Instant,
}

/// The silence a node's key must show before it is removed: the limit, at least
/// `MISSED_BEATS_MIN` of its own periods, and for a removal left half-done, the time a
/// removal may take on top.
fn silence_needed(limit: Duration, beat: &Beat) -> Option<Duration> {
    match beat {
        Beat::Alive { period_ms } => {
            let own = Duration::from_millis(*period_ms).saturating_mul(MISSED_BEATS_MIN);
            Some(limit.max(own))
        }
        Beat::Forgetting { .. } => Some(limit + Duration::from_millis(REMOVAL_WAIT_MS)),
        Beat::Forgotten { .. } => None,
    }
}

/// The nodes to remove now, with the revision each was seen silent at. Nothing while this
/// node's own view is younger than the limit (`judging_since`: when its connection,
/// watch and heartbeat last all held without a break).
pub(crate) fn silent(
    seen: &BTreeMap<String, Seen>,
    me: &str,
    limit: Duration,
    judging_since: Instant,
    now: Instant,
) -> Vec<(String, u64)> {
    if now.saturating_duration_since(judging_since) < limit {
        return Vec::new();
    }
    seen.iter()
        .filter(|(node, _)| node.as_str() != me)
        .filter_map(|(node, s)| {
            let needed = silence_needed(limit, &s.beat)?;
            (now.saturating_duration_since(s.at) >= needed).then(|| (node.clone(), s.revision))
        })
        .collect()
}

/// What the heartbeat task needs.
pub(super) struct Heart {
    pub(super) node: String,
    pub(super) cluster: String,
    pub(super) prefix: Prefix,
    pub(super) client: async_nats::Client,
    pub(super) out: Out,
    pub(super) bucket: kv::Store,
    pub(super) forget_after: Option<Duration>,
    pub(super) interest: mpsc::Sender<InterestOp>,
    /// The link loop, told when this node joins again (it checks the live sessions).
    pub(super) rejoined: mpsc::Sender<()>,
}

/// This node's own key: the revision of its last beat, when a beat last succeeded, and
/// since when it has seen its key say `forgetting`.
#[derive(Default)]
struct Mine {
    revision: Option<u64>,
    last_ok: Option<Instant>,
    forgetting_since: Option<Instant>,
}

/// Beat, watch every node's key and remove those silent past the limit, for the link's
/// life.
pub(super) async fn heartbeat(h: Heart) {
    let h = Arc::new(h);
    let period = beat_period(h.forget_after);
    let mut mine = Mine::default();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut judging_since = Instant::now();
    let mut changes = LinkStats::get(&h.out.stats.connection_changes);
    let mut watch: Option<kv::Watch> = None;
    let mut removing: HashSet<String> = HashSet::new();
    let mut lagging = 0u32;
    let (done_tx, mut done_rx) = mpsc::channel::<(String, bool)>(REMOVALS_MAX);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if watch.is_none() {
            watch = open_watch(&h).await;
            restart_judgement(&mut seen, &mut judging_since);
        }
        tokio::select! {
            _ = tick.tick() => {
                let now_changes = LinkStats::get(&h.out.stats.connection_changes);
                if now_changes != changes {
                    // A gap in this node's view: what it missed says nothing of the others.
                    changes = now_changes;
                    watch = None;
                    continue;
                }
                if watch_lags(&seen, &h.node, &mine, &mut lagging) {
                    // The watch does not show this node's own beat of a period ago: its
                    // consumer is stuck (it lived on a server now gone), so it shows
                    // nobody's. Made anew at the next turn; the beat goes on.
                    watch = None;
                }
                beat(&h, &mut mine, period).await;
                if mine.last_ok.is_none_or(|t| t.elapsed() > period * 2) {
                    restart_judgement(&mut seen, &mut judging_since);
                }
                if let Some(limit) = h.forget_after {
                    let now = Instant::now();
                    for (node, revision) in silent(&seen, &h.node, limit, judging_since, now) {
                        if removing.len() < REMOVALS_MAX && removing.insert(node.clone()) {
                            tokio::spawn(remove(h.clone(), node, revision, done_tx.clone()));
                        }
                    }
                }
                show(&h, &seen);
            }
            entry = next_entry(&mut watch) => match entry {
                Some(e) => record(&mut seen, &e),
                None => watch = None,
            },
            Some((node, removed)) = done_rx.recv() => {
                removing.remove(&node);
                if !removed {
                    // Refused or lost the race: look again after another full silence.
                    if let Some(s) = seen.get_mut(&node) {
                        s.at = Instant::now();
                    }
                }
            }
        }
    }
}

/// Whether the watch has not shown this node's own beat for `WATCH_LAG_TICKS_MAX` ticks
/// in a row (counted in `lagging`).
fn watch_lags(seen: &BTreeMap<String, Seen>, me: &str, mine: &Mine, lagging: &mut u32) -> bool {
    let shown = seen.get(me).map_or(0, |s| s.revision);
    if mine.revision.is_some_and(|r| r > shown) {
        *lagging += 1;
    } else {
        *lagging = 0;
    }
    if *lagging > WATCH_LAG_TICKS_MAX {
        *lagging = 0;
        eprintln!("cluster: the heartbeat watch has not shown this node's own beats for {WATCH_LAG_TICKS_MAX} periods: made anew");
        return true;
    }
    false
}

/// Start judging afresh: every node counts as just seen.
fn restart_judgement(seen: &mut BTreeMap<String, Seen>, judging_since: &mut Instant) {
    let now = Instant::now();
    *judging_since = now;
    for s in seen.values_mut() {
        s.at = now;
    }
}

async fn open_watch(h: &Heart) -> Option<kv::Watch> {
    let w = tokio::time::timeout(
        Duration::from_millis(FLUSH_WAIT_MS),
        h.bucket.watch_with_history(">"),
    )
    .await;
    match w {
        Ok(Ok(w)) => Some(w),
        _ => {
            LinkStats::add(&h.out.stats.nats_errors);
            tokio::time::sleep(Duration::from_millis(BEAT_PERIOD_MS_MIN)).await;
            None
        }
    }
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(w) => match w.next().await {
            Some(Ok(e)) => Some(e),
            _ => None,
        },
        None => std::future::pending().await,
    }
}

/// Take one change of the bucket into `seen`.
fn record(seen: &mut BTreeMap<String, Seen>, e: &kv::Entry) {
    let beat = match e.operation {
        kv::Operation::Put => Beat::parse(&e.value),
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    match beat {
        Some(beat) if valid_cluster_name(&e.key) => {
            if seen.len() < NODES_MAX || seen.contains_key(&e.key) {
                let at = Instant::now();
                let s = Seen {
                    revision: e.revision,
                    beat,
                    at,
                };
                seen.insert(e.key.clone(), s);
            }
        }
        _ => {
            seen.remove(&e.key);
        }
    }
}

/// Publish `seen` for `/metrics`.
fn show(h: &Heart, seen: &BTreeMap<String, Seen>) {
    if let Ok(mut nodes) = h.out.stats.nodes.lock() {
        nodes.clear();
        for (node, s) in seen {
            let shown = NodeSeen {
                at: s.at,
                state: s.beat.state(),
            };
            nodes.insert(node.clone(), shown);
        }
    }
}

/// One beat: compare-and-set this node's key on its last revision. A refusal means the
/// key changed under it: see why (`self_check`). The first beat (no revision yet: this
/// run's start) reads the key first, so a restart never overwrites a removal under way.
async fn beat(h: &Heart, mine: &mut Mine, period: Duration) {
    let Some(rev) = mine.revision else {
        self_check(h, mine).await;
        return;
    };
    let value = Beat::Alive {
        period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
    }
    .encode();
    let wait = Duration::from_millis(FLUSH_WAIT_MS);
    let written = tokio::time::timeout(wait, h.bucket.update(&h.node, value, rev))
        .await
        .map(|r| r.map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision));
    match written {
        Ok(Ok(rev)) => {
            mine.revision = Some(rev);
            mine.last_ok = Some(Instant::now());
            mine.forgetting_since = None;
        }
        Ok(Err(true)) => self_check(h, mine).await,
        Ok(Err(false)) | Err(_) => LinkStats::add(&h.out.stats.nats_errors),
    }
}

/// This node's key is not at the revision of its last beat: a write of its own whose
/// answer was lost (go on from it), a removal under way (wait for it, bounded), or done
/// (join again).
async fn self_check(h: &Heart, mine: &mut Mine) {
    let entry = tokio::time::timeout(
        Duration::from_millis(FLUSH_WAIT_MS),
        h.bucket.entry(&h.node),
    );
    let entry = match entry.await {
        Ok(Ok(e)) => e,
        _ => {
            LinkStats::add(&h.out.stats.nats_errors);
            return;
        }
    };
    let Some(e) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        beat_anew(h, mine).await;
        return;
    };
    match Beat::parse(&e.value) {
        Some(Beat::Alive { .. }) => mine.revision = Some(e.revision),
        Some(Beat::Forgetting { by }) => {
            let since = *mine.forgetting_since.get_or_insert_with(|| {
                eprintln!(
                    "cluster: node {} is being removed by {}, which found it silent \
                     (cut off from NATS?); waiting for that to finish before joining again",
                    h.node,
                    remover(&by)
                );
                Instant::now()
            });
            if since.elapsed() > Duration::from_millis(REMOVAL_WAIT_MS) {
                rejoin(h, mine, &by).await;
            }
        }
        Some(Beat::Forgotten { by }) => rejoin(h, mine, &by).await,
        None => {
            beat_anew(h, mine).await;
        }
    }
}

/// Write this node's key whatever it holds; whether it was written.
async fn beat_anew(h: &Heart, mine: &mut Mine) -> bool {
    let value = Beat::Alive {
        period_ms: u64::try_from(beat_period(h.forget_after).as_millis()).unwrap_or(u64::MAX),
    };
    let put = h.bucket.put(&h.node, value.encode());
    match tokio::time::timeout(Duration::from_millis(FLUSH_WAIT_MS), put).await {
        Ok(Ok(rev)) => {
            mine.revision = Some(rev);
            mine.last_ok = Some(Instant::now());
            mine.forgetting_since = None;
            true
        }
        _ => {
            LinkStats::add(&h.out.stats.nats_errors);
            false
        }
    }
}

/// Who a heartbeat mark names as its remover, for the log: a node, or the operator's
/// command.
fn remover(by: &str) -> String {
    if by == forget::COMMAND_REMOVER {
        "the operator (shardmq cluster-forget)".to_string()
    } else {
        format!("node {by}")
    }
}

/// Join again after a removal: beat anew (a plain write over the mark), rewrite every
/// interest entry (the queue consumer makes its deleted consumer again by itself), and
/// have the link loop check the live sessions against the registry (`recheck`).
async fn rejoin(h: &Heart, mine: &mut Mine, by: &str) {
    eprintln!(
        "cluster: node {} was removed by {} while silent (stopped, or cut off from \
         NATS); joining again: heartbeat, interest entries written again, queue consumer \
         made again, live sessions checked against the registry. Messages published \
         meanwhile for its subscribers came by core NATS only (at most once)",
        h.node,
        remover(by)
    );
    if beat_anew(h, mine).await {
        if h.interest.send(InterestOp::Rewrite).await.is_err() {
            LinkStats::add(&h.out.stats.nats_errors);
        }
        // A check already asked for is enough (a full queue of one).
        let _ = h.rejoined.try_send(());
        LinkStats::add(&h.out.stats.rejoined);
    }
}

/// Remove `node`, seen silent at `revision`: probe it, win the compare-and-set, remove
/// its NATS state (keeping its queued messages), mark it `forgotten`. Reports whether it
/// removed it.
async fn remove(h: Arc<Heart>, node: String, revision: u64, done: mpsc::Sender<(String, bool)>) {
    let removed = remove_node(&h, &node, revision).await;
    let _ = done.send((node, removed)).await;
}

async fn remove_node(h: &Heart, node: &str, revision: u64) -> bool {
    if let Err(e) = forget::probe_node(&h.client, &h.prefix, node).await {
        if !matches!(e, ForgetError::Alive(_)) {
            LinkStats::add(&h.out.stats.nats_errors);
        }
        eprintln!("cluster: node {node} is silent but not removed: {e}");
        return false;
    }
    let mark = Beat::Forgetting { by: h.node.clone() };
    let claimed = h.bucket.update(node, mark.encode(), revision);
    let Ok(Ok(marked)) = tokio::time::timeout(Duration::from_millis(FLUSH_WAIT_MS), claimed).await
    else {
        // Another node won, the node beat again, or NATS failed: not ours to do.
        return false;
    };
    let Some(done) = remove_marked(h, node).await else {
        return false;
    };
    mark_forgotten(h, node, marked).await;
    LinkStats::add(&h.out.stats.forgot);
    eprintln!(
        "cluster: node {node} silent for {} s: removed ({} interest entries deleted, consumer {}; \
         its queued messages kept for its sessions)",
        h.forget_after.map_or(0, |d| d.as_secs()),
        done.interest_entries,
        if done.consumer_deleted {
            "deleted"
        } else {
            "absent"
        }
    );
    true
}

/// Remove `node`'s NATS state (its key marked `forgetting` by this node), retrying a
/// failed step (JetStream electing a leader) every `REMOVAL_RETRY_MS` for at most
/// `REMOVAL_WAIT_MS`; past that the mark is left for another observer to take up.
async fn remove_marked(h: &Heart, node: &str) -> Option<forget::Forgotten> {
    let mut js = jetstream::new(h.client.clone());
    js.set_timeout(Duration::from_millis(FLUSH_WAIT_MS));
    let deadline = Instant::now() + Duration::from_millis(REMOVAL_WAIT_MS);
    loop {
        let removal = forget::remove(&js, &h.cluster, &h.prefix, node, Queued::Keep);
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match tokio::time::timeout(left, removal).await {
            Ok(Ok(done)) => return Some(done),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not done within {REMOVAL_WAIT_MS} ms"),
        };
        LinkStats::add(&h.out.stats.nats_errors);
        if Instant::now() + Duration::from_millis(REMOVAL_RETRY_MS) >= deadline {
            eprintln!(
                "cluster: removing silent node {node} failed: {why}; another node will retry"
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(REMOVAL_RETRY_MS)).await;
    }
}

/// Move `node`'s key from `forgetting` (at `revision`) to `forgotten`, retrying a few
/// times: until then the node, if it comes back, waits rather than joining again.
async fn mark_forgotten(h: &Heart, node: &str, revision: u64) {
    let mark = Beat::Forgotten { by: h.node.clone() };
    for _ in 0..MARK_ATTEMPTS_MAX {
        let w = h.bucket.update(node, mark.encode(), revision);
        match tokio::time::timeout(Duration::from_millis(FLUSH_WAIT_MS), w).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return,
            _ => LinkStats::add(&h.out.stats.nats_errors),
        }
        tokio::time::sleep(beat_period(h.forget_after)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The picked nodes and their revisions.
    fn names(v: &[(String, u64)]) -> HashMap<&str, u64> {
        v.iter().map(|(n, r)| (n.as_str(), *r)).collect()
    }

    fn seen(beat: Beat, revision: u64, at: Instant) -> Seen {
        Seen { revision, beat, at }
    }

    #[test]
    fn beats_read_back_and_refuse_what_they_are_not() {
        for b in [
            Beat::Alive { period_ms: 500 },
            Beat::Forgetting { by: "a-1".into() },
            Beat::Forgotten { by: "b_2".into() },
        ] {
            assert_eq!(Beat::parse(&b.encode()), Some(b));
        }
        for bad in [
            &b""[..],
            b"alive",
            b"alive x",
            b"forgotten a.b",
            b"gone a",
            b"\xff a",
        ] {
            assert_eq!(Beat::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_watch_that_stops_showing_this_nodes_beats_is_remade_after_a_while() {
        let t0 = Instant::now();
        let mut m = BTreeMap::new();
        m.insert(
            "me".to_string(),
            seen(Beat::Alive { period_ms: 500 }, 7, t0),
        );
        let mine = |r| Mine {
            revision: Some(r),
            ..Mine::default()
        };
        let mut lagging = 0;
        assert!(!watch_lags(&m, "me", &mine(7), &mut lagging), "shown");
        for _ in 0..WATCH_LAG_TICKS_MAX {
            assert!(
                !watch_lags(&m, "me", &mine(8), &mut lagging),
                "late, not yet stuck"
            );
        }
        assert!(watch_lags(&m, "me", &mine(9), &mut lagging), "stuck");
        assert_eq!(lagging, 0, "counted afresh for the new watch");
        assert!(!watch_lags(
            &BTreeMap::new(),
            "me",
            &Mine::default(),
            &mut lagging
        ));
    }

    #[test]
    fn the_period_is_a_quarter_of_the_limit_within_bounds() {
        let p = |s: Option<u64>| beat_period(s.map(Duration::from_secs)).as_millis();
        assert_eq!(p(Some(2)), 500);
        assert_eq!(p(Some(1)), 250);
        assert_eq!(p(Some(300)), 5000, "at most 5 s");
        assert_eq!(p(None), 5000, "off here: still beats, for the others");
    }

    #[test]
    fn only_nodes_silent_past_the_limit_in_a_long_enough_view_are_picked() {
        let limit = Duration::from_secs(2);
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let mut m = BTreeMap::new();
        let alive = |p| Beat::Alive { period_ms: p };
        m.insert("me".to_string(), seen(alive(500), 1, t0));
        m.insert("dead".to_string(), seen(alive(500), 2, t0));
        m.insert(
            "fresh".to_string(),
            seen(alive(500), 3, now - Duration::from_secs(1)),
        );
        // Beats every 5 s (its limit is off): three of its periods, not this node's limit.
        m.insert(
            "slow".to_string(),
            seen(alive(5000), 4, now - Duration::from_secs(9)),
        );
        m.insert(
            "gone".to_string(),
            seen(Beat::Forgotten { by: "x".into() }, 5, t0),
        );
        let picked = silent(&m, "me", limit, t0, now);
        assert_eq!(names(&picked), HashMap::from([("dead", 2)]));
        // A view restarted a second ago judges nothing.
        assert!(silent(&m, "me", limit, now - Duration::from_secs(1), now).is_empty());
        // A removal left half-done is taken up only after the limit plus its own bound.
        let mut m = BTreeMap::new();
        let half = seen(Beat::Forgetting { by: "w".into() }, 9, t0);
        m.insert("half".to_string(), half);
        assert!(silent(&m, "me", limit, t0, now).is_empty());
        let later = t0 + limit + Duration::from_millis(REMOVAL_WAIT_MS);
        assert_eq!(
            names(&silent(&m, "me", limit, t0, later)),
            HashMap::from([("half", 9)])
        );
    }
}
