//! A claim the registry answered after its CONNECT gave up (docs/cluster.md, the session
//! registry and "A session whose node died"): the client's retry here takes the session
//! over from the node the late claim moved it from, the old node's queue scanned once.

use super::{end_turn, output, string, with_len, Cores, NOW_MS};
use crate::broker::cluster::{FromCluster, SessionHandover, ToCluster, CLAIM_WAIT_MS};
use crate::broker::{Broker, Ingested};
use crate::protocol::SubscriptionOptions;
use crate::session::SubState;

/// A 3.1.1 CONNECT of `id` with Clean Session `clean` on a new link; returns the link and
/// the token of the claim it sent.
fn claiming(b: &mut Broker<()>, id: &str, clean: bool) -> (usize, u64) {
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, if clean { 0x02 } else { 0x00 }, 0, 60]);
    body.extend(string(id));
    let c = with_len(0x10, &body);
    assert_eq!(b.ingest(key, &c, NOW_MS), (c.len(), Ingested::More));
    let token = told(b)
        .into_iter()
        .find_map(|m| match m {
            ToCluster::Claim { token, .. } => Some(token),
            _ => None,
        })
        .expect("the CONNECT claims its id");
    (key, token)
}

fn told(b: &mut Broker<()>) -> Vec<ToCluster> {
    std::mem::take(&mut b.effects().cluster)
}

/// The registry's answer as the link sends it: the bucket's copy of the subscriptions
/// (one, `t/#`) whenever the entry named a node, then the answer.
fn answer(b: &mut Broker<()>, id: &str, token: u64, previous: Option<&str>, now_ms: u64) {
    let state = SessionHandover {
        exists: true,
        subs: vec![(
            "t/#".into(),
            SubState {
                options: SubscriptionOptions::default(),
                sub_id: None,
            },
        )],
        queued: Vec::new(),
    };
    let backup = FromCluster::SessionBackup {
        client_id: id.into(),
        state,
    };
    b.on_cluster(backup, now_ms);
    let claimed = FromCluster::Claimed {
        token,
        client_id: id.into(),
        ok: true,
        previous: previous.map(Box::from),
    };
    b.on_cluster(claimed, now_ms);
}

/// The CONNECT of link `key` gives up waiting for the registry: CONNACK 3 (3.1.1).
fn gives_up(b: &mut Broker<()>, key: usize, now_ms: u64) {
    b.on_timers(now_ms);
    assert_eq!(output(b, key), [0x20, 2, 0, 3], "server unavailable");
    end_turn(b, now_ms);
}

/// The scans the shard asked the link for: (client id, node).
fn scans(told: &[ToCluster]) -> Vec<(String, String)> {
    told.iter()
        .filter_map(|m| match m {
            ToCluster::Reclaim {
                client_id, from, ..
            } => Some((client_id.to_string(), from.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_retry_after_a_late_claim_scans_the_old_nodes_queue_once() {
    let mut net = Cores::new(1);
    let b = &mut net.shards[0];
    b.set_cluster("a");
    // x's session lived on b (dead); its CONNECT here gives up before the registry
    // answers, and the answer moves the entry here from b.
    let (k1, t1) = claiming(b, "x", false);
    let late = NOW_MS + CLAIM_WAIT_MS + 1;
    gives_up(b, k1, late);
    answer(b, "x", t1, Some("b"), late);
    assert!(b.sessions.find("x").is_none(), "nothing here yet");
    // The retry gives up too; its answer (the entry names this node) comes late as well.
    let (k2, t2) = claiming(b, "x", false);
    let later = late + CLAIM_WAIT_MS + 1;
    gives_up(b, k2, later);
    answer(b, "x", t2, None, later);
    assert!(scans(&told(b)).is_empty(), "no scan without a CONNECT");
    // The next retry is answered in time: it takes the session over from b.
    let (k3, t3) = claiming(b, "x", false);
    answer(b, "x", t3, None, later);
    assert_eq!(output(b, k3), [0x20, 2, 1, 0], "Session Present 1");
    let asked = told(b);
    assert_eq!(scans(&asked), [("x".to_string(), "b".to_string())]);
    let filters = asked.iter().find_map(|m| match m {
        ToCluster::Reclaim { filters, .. } => Some(filters.clone()),
        _ => None,
    });
    assert_eq!(filters, Some(vec![Box::from("t/#")]), "its filters");
    end_turn(b, later);
    // Its connection drops and the client connects again: the session is here, the
    // record spent: no second scan.
    b.close(k3, None, "network");
    end_turn(b, later);
    let (k4, t4) = claiming(b, "x", false);
    answer(b, "x", t4, None, later);
    assert_eq!(output(b, k4), [0x20, 2, 1, 0], "the session here");
    assert!(scans(&told(b)).is_empty(), "b's queue scanned once");
}

#[test]
fn a_late_claims_record_goes_unused_when_another_node_claimed_since_or_clean_start() {
    let mut net = Cores::new(1);
    let b = &mut net.shards[0];
    b.set_cluster("a");
    let late = NOW_MS + CLAIM_WAIT_MS + 1;
    // y: node c claimed y after this node's late claim (the registry names c now): the
    // retry takes it over from c, and b's queue is never scanned for it.
    let (k1, t1) = claiming(b, "y", false);
    gives_up(b, k1, late);
    answer(b, "y", t1, Some("b"), late);
    let (_, t2) = claiming(b, "y", false);
    answer(b, "y", t2, Some("c"), late);
    b.on_timers(late + super::super::cluster::HANDOVER_WAIT_MS + 1);
    assert_eq!(scans(&told(b)), [("y".to_string(), "c".to_string())]);
    // z: the retry asks for a new session: nothing of b's is wanted.
    let late = late + 2 * CLAIM_WAIT_MS;
    let (k3, t3) = claiming(b, "z", false);
    gives_up(b, k3, late);
    answer(b, "z", t3, Some("b"), late);
    let (k4, t4) = claiming(b, "z", true);
    answer(b, "z", t4, None, late);
    assert_eq!(output(b, k4), [0x20, 2, 0, 0], "a new session");
    assert!(scans(&told(b)).is_empty());
    // Nor later, once that session is gone.
    b.close(k4, None, "network");
    end_turn(b, late);
    let (_, t5) = claiming(b, "z", false);
    answer(b, "z", t5, None, late);
    assert!(
        scans(&told(b)).is_empty(),
        "the record went with the clean start"
    );
}

#[test]
fn a_node_that_took_an_id_late_and_never_had_the_session_stays_silent_when_it_moves_on() {
    let mut net = Cores::new(1);
    let b = &mut net.shards[0];
    b.set_cluster("a");
    let late = NOW_MS + CLAIM_WAIT_MS + 1;
    let (k1, t1) = claiming(b, "w", false);
    gives_up(b, k1, late);
    answer(b, "w", t1, Some("b"), late);
    // The client retried on node d, which took the id from this node and asks for the
    // state: an empty one would make d start a new session; none makes it take the
    // bucket's copy.
    for id in ["w", "v"] {
        let moved = FromCluster::TakenOver {
            client_id: id.into(),
            by: "d".into(),
        };
        b.on_cluster(moved, late);
    }
    let handed: Vec<String> = told(b)
        .into_iter()
        .filter_map(|m| match m {
            ToCluster::Handover { client_id, .. } => Some(client_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        handed,
        ["v"],
        "only v, never here either, is answered (empty)"
    );
    // The record went with it: w back here is not scanned for b.
    let (_, t2) = claiming(b, "w", false);
    answer(b, "w", t2, None, late);
    assert!(scans(&told(b)).is_empty());
}
