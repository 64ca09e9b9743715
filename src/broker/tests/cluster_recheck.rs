//! A node back from a cut-off from NATS (docs/cluster.md, "A node back from a cut-off"):
//! the shard lists its sessions for the link's check, and ends a listed session the
//! registry gives to another node (handing its state over), unless a claim for its id was
//! made here since the list.

use super::{end_turn, string, with_len, Cores, NOW_MS};
use crate::broker::cluster::{FromCluster, ToCluster};
use crate::broker::{Broker, Ingested};

/// Take what the shard told the link, answering each claim as the registry would for a
/// client id nobody held.
fn told(b: &mut Broker<()>) -> Vec<ToCluster> {
    let mut rest = Vec::new();
    for m in std::mem::take(&mut b.effects().cluster) {
        match m {
            ToCluster::Claim { client_id, token } => b.on_cluster(
                FromCluster::Claimed {
                    token,
                    client_id,
                    ok: true,
                    previous: None,
                },
                NOW_MS,
            ),
            other => rest.push(other),
        }
    }
    rest
}

/// A 3.1.1 CONNECT of `id` with Clean Session 0 (its session outlives the connection and
/// is taken over in place by the next CONNECT) on a new link, answered by the registry.
fn connected(b: &mut Broker<()>, id: &str) -> usize {
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, 0x00, 0, 60]);
    body.extend(string(id));
    let c = with_len(0x10, &body);
    assert_eq!(b.ingest(key, &c, NOW_MS), (c.len(), Ingested::More));
    told(b);
    end_turn(b, NOW_MS);
    assert!(b.sessions.find(id).is_some(), "{id} connected");
    key
}

#[test]
fn a_listed_session_given_away_ends_here_unless_claimed_since_the_list() {
    let mut net = Cores::new(1);
    let b = &mut net.shards[0];
    b.set_cluster("a");
    let x = connected(b, "x");
    connected(b, "y");
    b.on_cluster(FromCluster::ListSessions, NOW_MS);
    let mut listed: Vec<Box<str>> = told(b)
        .into_iter()
        .find_map(|m| match m {
            ToCluster::Live { client_ids } => Some(client_ids),
            _ => None,
        })
        .expect("the shard lists its sessions");
    listed.sort();
    assert_eq!(listed, [Box::from("x"), Box::from("y")]);
    let uid = |b: &Broker<()>, id: &str| {
        b.sessions
            .find(id)
            .and_then(|s| b.sessions.get(s))
            .map(|s| s.uid)
    };
    let y_uid = uid(b, "y");
    // y connects here again after the list: the registry's answer may predate its claim.
    connected(b, "y");
    assert_eq!(uid(b, "y"), y_uid, "the same session, resumed here");

    for id in ["x", "y", "z"] {
        let gone = FromCluster::Superseded {
            client_id: id.into(),
            owner: Some("b".into()),
        };
        b.on_cluster(gone, NOW_MS);
    }
    let handed: Vec<(Box<str>, Box<str>)> = told(b)
        .into_iter()
        .filter_map(|m| match m {
            ToCluster::Handover { to, client_id, .. } => Some((to, client_id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        handed,
        [(Box::from("b"), Box::from("x"))],
        "x's state to b, once"
    );
    let (_, closing) = end_turn(b, NOW_MS);
    assert_eq!(closing, [x], "x's connection closes (3.1.1: no DISCONNECT)");
    assert!(b.sessions.find("x").is_none(), "x ended here");
    assert!(
        b.sessions.find("y").is_some(),
        "y, claimed since the list, stays"
    );

    // A second report for x (its session gone) does nothing.
    let again = FromCluster::Superseded {
        client_id: "x".into(),
        owner: Some("b".into()),
    };
    b.on_cluster(again, NOW_MS);
    assert!(told(b).is_empty(), "nothing handed over twice");
}

/// A 5.0 CONNECT with an empty client id and a session that outlives it: the shard
/// assigns the id, which names this node, so the registry never holds it.
fn connected_assigned(b: &mut Broker<()>) {
    let key = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    let mut body = string("MQTT");
    body.extend_from_slice(&[5, 0x00, 0, 60]);
    // Properties: Session Expiry Interval (0x11) of 300 s.
    body.extend_from_slice(&[5, 0x11, 0, 0, 1, 44]);
    body.extend(string(""));
    let c = with_len(0x10, &body);
    assert_eq!(b.ingest(key, &c, NOW_MS), (c.len(), Ingested::More));
    told(b);
    end_turn(b, NOW_MS);
}

#[test]
fn sessions_with_ids_this_node_assigned_are_not_checked_against_the_registry() {
    let mut net = Cores::new(1);
    let b = &mut net.shards[0];
    b.set_cluster("a");
    connected(b, "p");
    connected_assigned(b);
    let ids: Vec<Box<str>> = b
        .sessions
        .iter()
        .map(|(_, s)| s.client_id.clone())
        .collect();
    assert_eq!(ids.len(), 2, "both sessions live: {ids:?}");
    assert!(
        ids.iter().any(|id| id.starts_with("shardmq-a-")),
        "an id assigned by node a: {ids:?}"
    );
    // At start (sessions restored from the store) and after a cut-off alike, only the
    // client's own id is sent to the registry: an assigned one has no entry there and
    // would be taken for a session another node owns.
    b.cluster_restored();
    b.on_cluster(FromCluster::ListSessions, NOW_MS);
    let lists: Vec<Vec<Box<str>>> = told(b)
        .into_iter()
        .filter_map(|m| match m {
            ToCluster::Restored { client_ids } | ToCluster::Live { client_ids } => Some(client_ids),
            _ => None,
        })
        .collect();
    assert_eq!(lists, [vec![Box::from("p")], vec![Box::from("p")]]);
}
