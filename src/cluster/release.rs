//! The link's ordered release list of QoS ≥ 1 messages (`docs/cluster.md`, "QoS 1/2
//! between nodes", *Order*): each message waits here for its stores in other nodes'
//! JetStream queues, and its core NATS copy leaves once it and every earlier message are
//! done.
//!
//! Owns: the messages in publish order, the stage of each (held, storing, done), per
//! topic the counts that decide when a message's store may start, and per (topic, node)
//! the last message meant for that node (the *chain*: each message names the one before
//! it, `Smq-Prev`, so the receiver can put a store that a failure reordered back in
//! order, `order`). Invariant: a message's
//! store starts only when every earlier unreleased message on its topic is itself started
//! (not held), was meant for exactly the same nodes, and none of them missed a node
//! (a failed store). So on one topic a receiving node never has a later message in its
//! queue while an earlier one still has to reach it by core NATS: the switch from the
//! core path to the durable one (the interest view catching up with a new filter) keeps
//! the order [MQTT-4.6.0-6] (3.1.1; 5.0 §4.6: "for the same Topic and QoS … in the order
//! that they were received from any given Client"). The key is the topic, which covers
//! every publisher on it (the link does not know publishers). Must not touch: NATS (the
//! caller sends the stores and the core copies), the interest view.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Where a message is on its way out.
enum Stage {
    /// Its store may not start yet (an earlier message on its topic goes another way).
    Held,
    /// Its stores are under way.
    Storing,
    /// Its stores are over: the nodes whose queue holds it.
    Done(Vec<Arc<str>>),
}

/// The message before one on its topic that was meant for the same node.
#[derive(Clone, Copy)]
struct Prev {
    /// Its number in the list.
    id: u64,
    /// The link's sequence number of it (the envelope's).
    seq: u64,
    /// It missed that node (its store failed or was skipped): its core copy goes there.
    missed: bool,
}

struct Entry<T> {
    topic: Arc<str>,
    /// The nodes it is meant for (the interest view when it came).
    targets: Vec<Arc<str>>,
    /// Per target, the message before it on its topic meant for that node.
    prevs: Vec<Option<Prev>>,
    /// `false`: skip the stores (too many under way; counted failed by the caller).
    store: bool,
    stage: Stage,
    item: T,
}

impl<T> Entry<T> {
    /// Done, and some node it was meant for did not get it stored.
    fn missed(&self) -> bool {
        matches!(&self.stage, Stage::Done(s) if s.len() < self.targets.len())
    }
}

/// Per topic with unreleased messages.
#[derive(Default)]
struct Topic {
    /// Unreleased messages not held (storing or done). All of them have targets `last`.
    started: usize,
    /// The targets of every started message.
    last: Vec<Arc<str>>,
    /// Started messages done with a node missed: their core copy still has to go there.
    missed: usize,
    /// Held messages, in order: always after every started one.
    held: VecDeque<u64>,
}

/// A message that leaves: its core NATS copy goes now.
pub struct Released<T> {
    /// What the caller pushed.
    pub item: T,
    /// The nodes whose queue holds it (named in the core copy's header).
    pub stored: Vec<Arc<str>>,
    /// How many nodes it was meant for.
    pub targets: usize,
    /// The nodes it was meant for whose store it missed, each with the sequence number of
    /// the message before it on its topic meant for that node (0: none): the core copy
    /// goes there and must not be passed on before that one (`Smq-Prev`).
    pub missed: Vec<(Arc<str>, u64)>,
}

/// Topics whose chains are kept; past it they start afresh (a message then names no
/// predecessor until its topic has one again).
pub const CHAIN_TOPICS_MAX: usize = 65_536;

/// QoS ≥ 1 messages in publish order, numbered consecutively from 0.
pub struct ReleaseList<T> {
    entries: VecDeque<Entry<T>>,
    /// Number of `entries[0]`.
    first: u64,
    topics: HashMap<Arc<str>, Topic>,
    /// Messages whose stores the caller must start (`take_starts`).
    starts: Vec<u64>,
    /// Per topic, per node: the last message meant for it.
    chain: HashMap<Arc<str>, Vec<(Arc<str>, Prev)>>,
}

impl<T> Default for ReleaseList<T> {
    fn default() -> Self {
        ReleaseList {
            entries: VecDeque::new(),
            first: 0,
            topics: HashMap::new(),
            starts: Vec::new(),
            chain: HashMap::new(),
        }
    }
}

impl<T> ReleaseList<T> {
    /// Messages not released yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every message was released.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add message `seq` (the link's number) on `topic` meant for `targets` (`store`:
    /// whether to store it for them at all). Its store starts now or later
    /// (`take_starts`); with no targets or no store it is done as soon as it is not held.
    pub fn push(
        &mut self,
        topic: &str,
        targets: Vec<Arc<str>>,
        store: bool,
        seq: u64,
        item: T,
    ) -> u64 {
        let id = self.first + self.entries.len() as u64;
        let topic: Arc<str> = match self.topics.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => match self.chain.get_key_value(topic) {
                Some((k, _)) => k.clone(),
                None => topic.into(),
            },
        };
        let prevs = self.link(&topic, &targets, id, seq);
        self.entries.push_back(Entry {
            topic: topic.clone(),
            targets,
            prevs,
            store,
            stage: Stage::Held,
            item,
        });
        self.topics
            .entry(topic.clone())
            .or_default()
            .held
            .push_back(id);
        self.start_held(&topic);
        id
    }

    /// The messages whose stores the caller must start now, in order.
    pub fn take_starts(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.starts)
    }

    /// The targets and item of message `id`, while it is not released.
    pub fn get(&self, id: u64) -> Option<(&[Arc<str>], &T)> {
        let e = self.entry(id)?;
        Some((&e.targets, &e.item))
    }

    /// Per target of message `id` (in `get`'s order), the sequence number its store must
    /// name as its predecessor (`Smq-Prev`): the message before it on its topic meant for
    /// that node, if that one could still be behind it there — not released yet (its
    /// store may be retried after this one lands), or released with that node missed
    /// (its core copy may wait at the receiver). `None`: nothing to wait for. Call when
    /// its store starts.
    pub fn store_prevs(&self, id: u64) -> Vec<Option<u64>> {
        let Some(e) = self.entry(id) else {
            return Vec::new();
        };
        e.prevs
            .iter()
            .map(|p| p.filter(|p| p.missed || p.id >= self.first).map(|p| p.seq))
            .collect()
    }

    /// Chain message `id` (number `seq`) on `topic` to each of `targets`: the previous
    /// last message meant for each.
    fn link(
        &mut self,
        topic: &Arc<str>,
        targets: &[Arc<str>],
        id: u64,
        seq: u64,
    ) -> Vec<Option<Prev>> {
        if targets.is_empty() {
            return Vec::new();
        }
        if !self.chain.contains_key(topic) && self.chain.len() >= CHAIN_TOPICS_MAX {
            self.chain.clear();
        }
        let links = self.chain.entry(topic.clone()).or_default();
        let now = Prev {
            id,
            seq,
            missed: false,
        };
        targets
            .iter()
            .map(|n| match links.iter_mut().find(|(m, _)| m == n) {
                Some((_, last)) => Some(std::mem::replace(last, now)),
                None => {
                    links.push((n.clone(), now));
                    None
                }
            })
            .collect()
    }

    /// Message `id` on `topic` left having missed `node`: the chain's last message, or the
    /// next message meant for `node` on the topic (which names it), must say so.
    fn note_missed(&mut self, topic: &Arc<str>, node: &Arc<str>, id: u64) {
        let Some(links) = self.chain.get_mut(topic) else {
            return;
        };
        let Some((_, last)) = links.iter_mut().find(|(n, _)| n == node) else {
            return;
        };
        if last.id == id {
            last.missed = true;
            return;
        }
        // A later message meant for `node` on the topic names it: the first such one.
        let next = self
            .entries
            .iter_mut()
            .filter(|e| e.topic == *topic)
            .find_map(|e| {
                let i = e.targets.iter().position(|n| n == node)?;
                e.prevs.get_mut(i)?.as_mut()
            });
        if let Some(p) = next.filter(|p| p.id == id) {
            p.missed = true;
        }
    }

    /// The stores of message `id` are over: `stored` names the nodes whose queue holds it.
    /// Ignored unless its stores were under way.
    pub fn stored(&mut self, id: u64, stored: Vec<Arc<str>>) {
        let Some(i) = self.index(id) else {
            return;
        };
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        if !matches!(e.stage, Stage::Storing) {
            return;
        }
        e.stage = Stage::Done(stored);
        if e.missed() {
            if let Some(t) = self.topics.get_mut(&e.topic) {
                t.missed += 1;
            }
        }
    }

    /// The first message, if it is done: it leaves. Held messages of its topic whose turn
    /// came are started (see `take_starts`).
    pub fn next_release(&mut self) -> Option<Released<T>> {
        if !matches!(self.entries.front()?.stage, Stage::Done(_)) {
            return None;
        }
        let e = self.entries.pop_front()?;
        let id = self.first;
        self.first += 1;
        let Stage::Done(stored) = e.stage else {
            return None;
        };
        let mut gone = Vec::new();
        for (n, p) in e.targets.iter().zip(&e.prevs) {
            if !stored.contains(n) {
                gone.push((n.clone(), p.map_or(0, |p| p.seq)));
            }
        }
        for (n, _) in &gone {
            self.note_missed(&e.topic, n, id);
        }
        if let Some(t) = self.topics.get_mut(&e.topic) {
            t.started = t.started.saturating_sub(1);
            if !gone.is_empty() {
                t.missed = t.missed.saturating_sub(1);
            }
            if t.started == 0 && t.held.is_empty() {
                self.topics.remove(&e.topic);
            } else {
                self.start_held(&e.topic);
            }
        }
        Some(Released {
            item: e.item,
            stored,
            targets: e.targets.len(),
            missed: gone,
        })
    }

    /// Start the held messages of `topic` that may start, in order: while the first held
    /// one has no started message before it on its topic, or only started ones meant for
    /// the same nodes with none missed.
    fn start_held(&mut self, topic: &Arc<str>) {
        loop {
            let Some(t) = self.topics.get(topic) else {
                return;
            };
            let Some(&id) = t.held.front() else {
                return;
            };
            let Some(i) = self.index(id) else {
                return;
            };
            let Some(e) = self.entries.get_mut(i) else {
                return;
            };
            let Some(t) = self.topics.get_mut(topic) else {
                return;
            };
            let fits = t.started == 0 || (t.missed == 0 && t.last == e.targets);
            if !fits {
                return;
            }
            t.held.pop_front();
            if t.started == 0 {
                t.last.clone_from(&e.targets);
            }
            t.started += 1;
            if e.targets.is_empty() || !e.store {
                e.stage = Stage::Done(Vec::new());
                if e.missed() {
                    t.missed += 1;
                }
            } else {
                e.stage = Stage::Storing;
                self.starts.push(id);
            }
        }
    }

    fn index(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id.checked_sub(self.first)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    fn entry(&self, id: u64) -> Option<&Entry<T>> {
        self.entries.get(self.index(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: &[&str]) -> Vec<Arc<str>> {
        n.iter().map(|&s| s.into()).collect()
    }

    /// Release everything that can go; the items, in order.
    fn release_all(l: &mut ReleaseList<u32>) -> Vec<u32> {
        std::iter::from_fn(|| l.next_release().map(|r| r.item)).collect()
    }

    /// The case of the bench's reorder: `t`'s first message goes by core NATS only (the
    /// view did not show B yet) and waits behind another topic's store; the view catches
    /// up and `t`'s second message is for B's queue. Its store must not start before the
    /// first one's core copy left.
    #[test]
    fn a_store_waits_for_an_earlier_core_only_message_of_its_topic() {
        let mut l = ReleaseList::default();
        let x = l.push("o", nodes(&["b"]), true, 0, 0);
        assert_eq!(l.take_starts(), [x], "nothing before it on its topic");
        l.push("t", nodes(&[]), true, 1, 1);
        let m2 = l.push("t", nodes(&["b"]), true, 2, 2);
        assert!(
            l.take_starts().is_empty(),
            "m2's store would reach B's queue before m1's core copy left"
        );
        assert!(release_all(&mut l).is_empty(), "x is still storing");
        l.stored(x, nodes(&["b"]));
        assert_eq!(release_all(&mut l), [0, 1], "x, then m1's core copy");
        assert_eq!(l.take_starts(), [m2], "now m2 may be stored");
        l.stored(m2, nodes(&["b"]));
        assert_eq!(release_all(&mut l), [2]);
        assert!(l.is_empty() && l.topics.is_empty());
    }

    #[test]
    fn stores_for_the_same_nodes_pipeline_and_other_topics_do_not_wait() {
        let mut l = ReleaseList::default();
        let a = l.push("t", nodes(&["b"]), true, 0, 0);
        let b = l.push("t", nodes(&["b"]), true, 1, 1);
        l.push("u", nodes(&[]), true, 2, 2);
        let d = l.push("u", nodes(&["c"]), true, 3, 3);
        assert_eq!(
            l.take_starts(),
            [a, b],
            "same nodes: no wait; u's d waits for c"
        );
        l.stored(b, nodes(&["b"]));
        assert!(release_all(&mut l).is_empty(), "a first");
        l.stored(a, nodes(&["b"]));
        assert_eq!(release_all(&mut l), [0, 1, 2]);
        assert_eq!(l.take_starts(), [d]);
        let e = l.push("v", nodes(&["c"]), true, 4, 4);
        assert_eq!(l.take_starts(), [e], "another topic never waits for t or u");
        assert_eq!(l.get(d).map(|(n, &i)| (n.len(), i)), Some((1, 3)));
    }

    #[test]
    fn new_targets_and_missed_stores_hold_later_stores_until_released() {
        let mut l = ReleaseList::default();
        let a = l.push("t", nodes(&["b"]), true, 0, 0);
        let b = l.push("t", nodes(&["b", "c"]), true, 1, 1);
        assert_eq!(l.take_starts(), [a], "c is new: b waits for a");
        // a's store failed: its core copy must reach B before anything later is stored.
        l.stored(a, nodes(&[]));
        let c = l.push("t", nodes(&["b", "c"]), true, 2, 2);
        assert!(l.take_starts().is_empty(), "held behind b, in order");
        let r = l.next_release().expect("a is done");
        assert_eq!((r.item, r.stored.len(), r.targets), (0, 0, 1));
        assert_eq!(l.take_starts(), [b, c], "b first, c behind it (same nodes)");
        // Skipped stores count as missed and hold what follows.
        l.stored(b, nodes(&["b", "c"]));
        l.stored(c, nodes(&["b", "c"]));
        let skip = l.push("t", nodes(&["b"]), false, 3, 3);
        let after = l.push("t", nodes(&["b"]), true, 4, 4);
        assert!(l.take_starts().is_empty());
        assert_eq!(
            release_all(&mut l),
            [1, 2, 3],
            "the skipped one is done at once"
        );
        assert_eq!(l.take_starts(), [after]);
        l.stored(skip, nodes(&["b"]));
        assert!(
            release_all(&mut l).is_empty(),
            "a stale answer changes nothing"
        );
    }

    /// The chain: a store names the message before it on its topic for that node while
    /// that one is unreleased, or after it missed the node; a core copy that missed a node
    /// always names it (the receiver may still have it in its queue).
    #[test]
    fn stores_and_missed_copies_name_their_predecessor() {
        let mut l = ReleaseList::default();
        let a = l.push("t", nodes(&["b"]), true, 10, 0);
        let b = l.push("t", nodes(&["b"]), true, 11, 1);
        assert_eq!(l.take_starts(), [a, b]);
        assert_eq!(l.store_prevs(a), [None], "first of its chain");
        assert_eq!(
            l.store_prevs(b),
            [Some(10)],
            "a may be retried after b lands"
        );
        l.stored(a, nodes(&["b"]));
        l.stored(b, nodes(&["b"]));
        let r: Vec<_> = std::iter::from_fn(|| l.next_release()).collect();
        assert!(r.iter().all(|r| r.missed.is_empty()));
        let c = l.push("t", nodes(&["b"]), true, 12, 2);
        assert_eq!(
            l.store_prevs(c),
            [None],
            "b left stored: it is ahead in the queue"
        );
        // c misses b; d started in flight before that was known, e pushed after.
        let d = l.push("t", nodes(&["b"]), true, 13, 3);
        l.take_starts();
        l.stored(c, nodes(&[]));
        let e = l.push("t", nodes(&["b"]), true, 14, 4);
        assert!(l.take_starts().is_empty(), "held behind the missed c");
        let r = l.next_release().expect("c is done");
        assert_eq!(r.missed, [("b".into(), 11)], "c's core copy names b's 11");
        assert_eq!(l.store_prevs(d), [Some(12)]);
        l.stored(d, nodes(&["b"]));
        assert_eq!(release_all(&mut l), [3]);
        assert_eq!(l.take_starts(), [e]);
        assert_eq!(l.store_prevs(e), [None], "d left stored before e started");
        l.stored(e, nodes(&["b"]));
        assert_eq!(release_all(&mut l), [4]);
        // A message after a released missed one names it; a new node starts its chain.
        let f = l.push("t", nodes(&["b"]), false, 15, 5);
        assert_eq!(release_all(&mut l), [5]);
        let g = l.push("t", nodes(&["b", "c"]), true, 16, 6);
        assert_eq!(l.take_starts(), [g]);
        assert_eq!(l.store_prevs(g), [Some(15), None], "f missed b; c is new");
        let _ = f;
    }

    /// A small deterministic generator (xorshift), so failures repeat.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One run of the model: a publishing node's link with this list, JetStream and a
    /// receiving node B subscribed on every topic on core NATS from the start, while the
    /// interest view shows B's filter for topic `k` only from a random step on. JetStream
    /// stores the started messages in the order their stores started; B reads a stored
    /// message at once (the worst case), the link learns of the store later (the ack), and
    /// a released message reaches B by core NATS at once unless B's queue holds it.
    /// Returns what B got, per topic, in arrival order.
    fn model_run(seed: u64) -> Vec<Vec<u32>> {
        const TOPICS: usize = 4;
        const MESSAGES: u32 = 300;
        let mut rng = Rng(seed | 1);
        let names: Vec<String> = (0..TOPICS).map(|k| format!("t{k}")).collect();
        let switch_at: Vec<u32> = (0..TOPICS).map(|_| rng.below(200) as u32).collect();
        let mut l: ReleaseList<(usize, u32)> = ReleaseList::default();
        let (mut sent, mut stream_order, mut acks) = (0u32, VecDeque::new(), VecDeque::new());
        let mut got = vec![Vec::new(); TOPICS];
        let mut per_topic = [0u32; TOPICS];
        loop {
            stream_order.extend(l.take_starts());
            let can_store = !stream_order.is_empty();
            let can_ack = !acks.is_empty();
            if sent == MESSAGES && !can_store && !can_ack {
                break;
            }
            match rng.below(3) {
                0 if sent < MESSAGES => {
                    let k = rng.below(TOPICS as u64) as usize;
                    let targets = if sent >= switch_at[k] {
                        nodes(&["b"])
                    } else {
                        Vec::new()
                    };
                    l.push(&names[k], targets, true, u64::from(sent), (k, per_topic[k]));
                    per_topic[k] += 1;
                    sent += 1;
                }
                1 if can_store => {
                    let Some(id) = stream_order.pop_front() else {
                        continue;
                    };
                    let (_, &(k, n)) = l.get(id).expect("a storing message is listed");
                    got[k].push(n);
                    acks.push_back(id);
                }
                2 if can_ack => {
                    let Some(id) = acks.pop_front() else {
                        continue;
                    };
                    l.stored(id, nodes(&["b"]));
                }
                _ => {}
            }
            // The link releases after every push and every answer.
            while let Some(r) = l.next_release() {
                if r.stored.is_empty() {
                    got[r.item.0].push(r.item.1);
                }
            }
        }
        assert!(l.is_empty(), "seed {seed}: everything left");
        got
    }

    #[test]
    fn at_the_switch_to_the_durable_path_each_topic_keeps_its_order() {
        for seed in 1..=300 {
            let got = model_run(seed);
            for (k, arrived) in got.iter().enumerate() {
                let in_order = arrived.windows(2).all(|w| w[0] < w[1]);
                assert!(
                    in_order,
                    "seed {seed}, topic {k}: out of order: {arrived:?}"
                );
                let expected: Vec<u32> = (0..arrived.len() as u32).collect();
                assert_eq!(arrived, &expected, "seed {seed}, topic {k}: each once");
            }
        }
    }
}
