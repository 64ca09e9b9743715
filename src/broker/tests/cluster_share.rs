//! Share groups in a cluster whose members are all on this node (docs/cluster.md,
//! "Shared subscriptions at QoS 1/2", *Members all on the publishing node*): the shard
//! serves them itself and names them to the link, as long as the link's view shows no
//! member elsewhere and a member is online here; otherwise the cluster picks, as before.
//! One shard of node `p`, memory mode, with the link modelled.

use std::sync::Arc;

use super::{
    connect_packet, end_turn, publish_packet, stored_connect_packet, subscribe_packet, Ingested,
    NOW_MS,
};
use crate::broker::cluster::{FromCluster, ToCluster};
use crate::broker::Broker;
use crate::config::Config;

/// What the node told the link of each publish: (payload, groups served here).
#[derive(Default)]
struct Link {
    published: Vec<(Vec<u8>, Vec<Arc<str>>)>,
}

impl Link {
    /// Carry one round: answer claims, interests, copies and publishes at once.
    fn pump(&mut self, b: &mut Broker<()>) {
        for _ in 0..8 {
            let mut answers = Vec::new();
            for m in std::mem::take(&mut b.effects().cluster) {
                match m {
                    ToCluster::Claim { client_id, token } => answers.push(FromCluster::Claimed {
                        token,
                        client_id,
                        ok: true,
                        previous: None,
                    }),
                    ToCluster::Interest { add: true, seq, .. } if seq > 0 => {
                        answers.push(FromCluster::InterestReady { shard: 0, seq })
                    }
                    ToCluster::SessionSubs { seq, .. } if seq > 0 => {
                        answers.push(FromCluster::SubsSaved { shard: 0, seq })
                    }
                    ToCluster::Publish {
                        msg, ack, served, ..
                    } => {
                        self.published.push((msg.payload.to_vec(), served));
                        if ack > 0 {
                            answers.push(FromCluster::Published { shard: 0, seq: ack });
                        }
                    }
                    _ => {}
                }
            }
            for a in answers {
                b.on_cluster(a, NOW_MS);
            }
            end_turn(b, NOW_MS);
        }
    }

    /// The groups served here for `payload`'s publish.
    fn served(&self, payload: &[u8]) -> Vec<String> {
        let (_, served) = self
            .published
            .iter()
            .find(|(p, _)| p == payload)
            .expect("handed to the link");
        served.iter().map(|s| s.to_string()).collect()
    }
}

fn client(b: &mut Broker<()>, link: &mut Link, connect: Vec<u8>, share: bool) -> usize {
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    // The CONNECT waits for the registry's answer before the next packet is read.
    assert_eq!(
        b.ingest(key, &connect, NOW_MS),
        (connect.len(), Ingested::More)
    );
    link.pump(b);
    if share {
        let s = subscribe_packet("$share/g/t");
        assert_eq!(b.ingest(key, &s, NOW_MS), (s.len(), Ingested::More));
        link.pump(b);
    }
    b.drain_output(key, &mut Vec::new());
    key
}

/// Whether `key`'s output since the last look holds `payload` (unique in this test).
fn got(b: &mut Broker<()>, key: usize, payload: &[u8]) -> bool {
    let mut out = Vec::new();
    b.drain_output(key, &mut out);
    out.windows(payload.len()).any(|w| w == payload)
}

#[test]
fn a_group_with_no_member_elsewhere_is_served_here_while_a_member_is_online() {
    let cfg = Arc::new(Config {
        shards: 1,
        ..Config::default()
    });
    let mut b = Broker::new(0, 1, cfg, NOW_MS);
    b.set_cluster("p");
    let mut link = Link::default();
    let member = client(&mut b, &mut link, stored_connect_packet("m"), true);
    let publisher = client(&mut b, &mut link, connect_packet("p"), false);
    let publish = |b: &mut Broker<()>, link: &mut Link, payload: &[u8]| {
        let p = publish_packet("t", payload);
        assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
        link.pump(b);
    };
    let share = "$share/g/t";

    publish(&mut b, &mut link, b"payload-one");
    assert_eq!(
        link.served(b"payload-one"),
        [share],
        "no member elsewhere: served here"
    );
    assert!(got(&mut b, member, b"payload-one"));

    let remote = |remote| FromCluster::ShareRemote {
        share: share.into(),
        remote,
    };
    b.on_cluster(remote(true), NOW_MS);
    publish(&mut b, &mut link, b"payload-two");
    assert!(
        link.served(b"payload-two").is_empty(),
        "a member elsewhere: the cluster picks"
    );
    assert!(
        !got(&mut b, member, b"payload-two"),
        "not delivered by the shard"
    );

    b.on_cluster(remote(false), NOW_MS);
    publish(&mut b, &mut link, b"payload-three");
    assert_eq!(link.served(b"payload-three"), [share]);
    assert!(got(&mut b, member, b"payload-three"));

    // The member offline (a stored session): the group's queue keeps it for it.
    assert!(b.on_closed(member, NOW_MS).is_some());
    link.pump(&mut b);
    publish(&mut b, &mut link, b"payload-four");
    assert!(
        link.served(b"payload-four").is_empty(),
        "no online member here: left to the cluster"
    );
}
