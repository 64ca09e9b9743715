//! A subscription storm: a thousand subscribers SUBSCRIBE in one turn and wait for the
//! shard's walk slices of the retained tree (`broker::pacing`, 4 a turn). Those waiting
//! are not resumed every turn to be refused again (that was O(n) a turn, O(n²) over the
//! storm), the slices go to them oldest first, and the walk's rules hold meanwhile: a
//! retained message stamped after a subscription reaches it live, never from the walk;
//! a session that ends while it waits leaves no gap, and its key's next owner is served.

use super::super::pacing::RETAINED_SHARD_WALKS_PER_TURN_MAX;
use super::{publishes, retained_packet, subscribe_qos0_packet};
use super::{Cores, CONNACK_OK, NOW_MS};

const SUBSCRIBERS: usize = 1_000;

/// What subscriber `i` was sent, as (topic, RETAIN, payload).
type Got = Vec<(String, bool, Vec<u8>)>;

fn got_once(got: &Got, topic: &str, retain: bool, payload: &[u8]) -> bool {
    let n = got
        .iter()
        .filter(|(t, r, p)| t == topic && *r == retain && p == payload)
        .count();
    n == 1
}

#[test]
fn a_subscription_storm_hands_out_slices_oldest_first_without_resuming_everyone() {
    let mut net = Cores::new(1);
    let publ = net.connect(0, "storm-pub");
    net.send(publ, &retained_packet("storm/old", b"old"));
    let subs: Vec<(usize, usize)> = (0..SUBSCRIBERS)
        .map(|i| net.connect(0, &format!("storm-{i}")))
        .collect();
    for &c in &subs {
        assert_eq!(net.output(c), CONNACK_OK);
    }
    let mut now = NOW_MS + 1;
    net.shards[0].begin_turn(now);
    let handed_before = net.shards[0].pacing.handed();
    let filter = ["storm/#".to_string()];
    for &c in &subs {
        net.send(c, &subscribe_qos0_packet(&filter));
    }
    let mut got: Vec<Got> = subs.iter().map(|&c| publishes(&net.output(c))).collect();
    let mut served_at: Vec<Option<usize>> = got
        .iter()
        .map(|g| g.iter().any(|(_, r, _)| *r).then_some(0))
        .collect();
    let (mut turn, mut late) = (0, None);
    while net.shards[0].timers_backlog() {
        turn += 1;
        assert!(turn < 2 * SUBSCRIBERS, "the storm never ends");
        now += 1;
        net.shards[0].begin_turn(now);
        if turn == 10 {
            // Stamped after every subscription: each subscriber gets it live, once.
            net.send(publ, &retained_packet("storm/new", b"new"));
        }
        if turn == 20 {
            // Ends while it waits; a new client (maybe on its key) subscribes behind all.
            assert!(net.shards[0].on_closed(subs[900].1, now).is_some());
            let c = net.connect(0, "storm-late");
            assert_eq!(net.output(c), CONNACK_OK);
            net.send(c, &subscribe_qos0_packet(&filter));
            late = Some((c, Vec::new()));
        }
        for (i, &c) in subs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 900 || turn < 20)
        {
            got[i].extend(publishes(&net.output(c)));
            if served_at[i].is_none() && got[i].iter().any(|(_, r, _)| *r) {
                served_at[i] = Some(turn);
            }
        }
        if let Some((c, g)) = late.as_mut() {
            g.extend(publishes(&net.output(*c)));
        }
    }
    let handed = net.shards[0].pacing.handed() - handed_before;
    assert!(
        handed <= 2 * SUBSCRIBERS as u64,
        "{handed} resumptions for {SUBSCRIBERS} subscribers: O(n), not O(n²)"
    );
    let per_turn = RETAINED_SHARD_WALKS_PER_TURN_MAX;
    assert!(turn >= SUBSCRIBERS / per_turn - 1, "{turn} turns");
    for (i, g) in got.iter().enumerate().filter(|&(i, _)| i != 900) {
        assert!(got_once(g, "storm/old", true, b"old"), "{i}: {g:?}");
        assert!(got_once(g, "storm/new", false, b"new"), "{i}: {g:?}");
        assert!(
            !g.iter().any(|(t, r, _)| t == "storm/new" && *r),
            "{i}: walk sent it"
        );
    }
    let served: Vec<usize> = served_at.iter().flatten().copied().collect();
    assert_eq!(served.len(), SUBSCRIBERS - 1, "all but the one that ended");
    assert!(served.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    for t in 0..=turn {
        let n = served.iter().filter(|&&x| x == t).count();
        assert!(n <= per_turn, "{n} walks in turn {t}");
    }
    let (_, g) = late.expect("the late client subscribed");
    assert!(got_once(&g, "storm/old", true, b"old"), "{g:?}");
    assert!(got_once(&g, "storm/new", true, b"new"), "{g:?}");
}

/// A storm over a retained tree with nothing a filter can match (empty, or no node for
/// the filter's first level): no walk at all, so no session takes a slice or waits in
/// the queue of walks (before, all but 4 waited, n/4 turns in all, for an empty walk),
/// and a publish right after reaches every subscriber.
#[test]
fn a_storm_over_nothing_retained_takes_no_walk_slices() {
    for retained in [None, Some("other/old")] {
        let mut net = Cores::new(1);
        let publ = net.connect(0, "storm-pub");
        if let Some(topic) = retained {
            net.send(publ, &retained_packet(topic, b"old"));
        }
        let subs: Vec<(usize, usize)> = (0..100)
            .map(|i| net.connect(0, &format!("storm-{i}")))
            .collect();
        for &c in &subs {
            assert_eq!(net.output(c), CONNACK_OK);
        }
        net.shards[0].begin_turn(NOW_MS + 1);
        let (handed, slices) = (net.shards[0].pacing.handed(), net.shards[0].pacing.slices());
        for &c in &subs {
            net.send(c, &subscribe_qos0_packet(&["storm/#".to_string()]));
        }
        let pacing = &net.shards[0].pacing;
        assert_eq!(
            pacing.slices() - slices,
            0,
            "{retained:?}: walk slices taken"
        );
        assert_eq!(
            pacing.walkers_queued(),
            0,
            "{retained:?}: queued for a slice"
        );
        assert!(!pacing.has_waiting(), "{retained:?}");
        net.shards[0].begin_turn(NOW_MS + 2);
        assert_eq!(net.shards[0].pacing.handed(), handed, "{retained:?}");
        net.send(publ, &retained_packet("storm/new", b"new"));
        for &c in &subs {
            let got = publishes(&net.output(c));
            assert!(
                got_once(&got, "storm/new", false, b"new"),
                "{retained:?}: {got:?}"
            );
        }
    }
}
