//! QoS 2 in a cluster across a power cut of the publishing node (docs/persistence.md,
//! "The cluster link and QoS 2"; docs/cluster.md, "QoS 1/2 between nodes"). One stored
//! shard core of node `p`, on a simulated disk, with the cluster link and JetStream
//! modelled: every QoS ≥ 1 message the node hands the link is stored in the queue of a
//! remote node `r` under the message id the link gives it, and a store under an id the
//! queue saw before is dropped, as JetStream's duplicate window drops it. The publisher's
//! resend after the cut must reach `r`'s queue, and the local subscriber, once.

use std::sync::Arc;

use super::{end_turn, restarted_broker, stored_broker_with, string, with_len, NOW_MS, STORE_DIR};
use crate::broker::cluster::{FromCluster, ToCluster};
use crate::broker::{Broker, Ingested};
use crate::config::Config;
use crate::store::{LiveState, SimDisk};

/// The link and JetStream, as the node sees them.
struct Model {
    /// `r`'s queue: (message id, payload), in the order stored. Survives `p`'s cut.
    queue: Vec<(String, Vec<u8>)>,
    /// The link's sequence: a restarted link starts elsewhere (`link::start_seq`).
    seq: u64,
    /// Answers the link owes the node.
    answers: Vec<FromCluster>,
}

impl Model {
    fn new(run: u64, queue: Vec<(String, Vec<u8>)>) -> Model {
        Model {
            queue,
            seq: run << 40,
            answers: Vec::new(),
        }
    }

    /// Take what the node told the link: stores of QoS ≥ 1 messages done at once (the
    /// queue is JetStream's: durable whatever `p`'s disk keeps), answers queued.
    fn take(&mut self, b: &mut Broker<()>) {
        for m in std::mem::take(&mut b.effects().cluster) {
            match m {
                ToCluster::Claim { client_id, token } => self.answers.push(FromCluster::Claimed {
                    token,
                    client_id,
                    ok: true,
                    previous: None,
                }),
                ToCluster::Interest { add: true, seq, .. } if seq > 0 => self
                    .answers
                    .push(FromCluster::InterestReady { shard: 0, seq }),
                ToCluster::SessionSubs { seq, .. } if seq > 0 => {
                    self.answers.push(FromCluster::SubsSaved { shard: 0, seq })
                }
                ToCluster::Publish {
                    msg, ack, qos2_id, ..
                } => {
                    self.seq += 1;
                    let stem = qos2_id.map(|k| k.stem());
                    let id = crate::cluster::link::store_msg_id("p", self.seq, stem.as_deref());
                    if msg.qos != crate::protocol::QoS::AtMostOnce
                        && !self.queue.iter().any(|(i, _)| *i == id)
                    {
                        self.queue.push((id, msg.payload.to_vec()));
                    }
                    if ack > 0 {
                        self.answers
                            .push(FromCluster::Published { shard: 0, seq: ack });
                    }
                }
                _ => {}
            }
        }
    }

    /// Give the node the answers owed.
    fn answer(&mut self, b: &mut Broker<()>) {
        for m in std::mem::take(&mut self.answers) {
            b.on_cluster(m, NOW_MS);
        }
    }

    /// Copies of `payload` in `r`'s queue.
    fn copies(&self, payload: &[u8]) -> usize {
        self.queue.iter().filter(|(_, p)| p == payload).count()
    }
}

/// Turns, answers and syncs until nothing moves.
fn pump(b: &mut Broker<()>, m: &mut Model) {
    for _ in 0..20 {
        m.take(b);
        m.answer(b);
        end_turn(b, NOW_MS);
        while b.journal_background(true) {}
        end_turn(b, NOW_MS);
    }
    m.take(b);
    assert!(m.answers.is_empty(), "the model settles");
}

fn cfg() -> Config {
    Config {
        shards: 1,
        ..Config::default()
    }
}

/// CONNECT, MQTT 3.1.1, Clean Session 0, keepalive 60 s.
fn stored_connect(id: &str) -> Vec<u8> {
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, 0x00, 0, 60]);
    body.extend(string(id));
    with_len(0x10, &body)
}

/// PUBLISH QoS 2 on `t` with packet id `pid` (`dup`: a resend).
fn publish2(pid: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut body = string("t");
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(payload);
    with_len(if dup { 0x3c } else { 0x34 }, &body)
}

/// A stored client `id` connects (and, with `sub`, subscribes to `t` at QoS 2); its key.
fn client(b: &mut Broker<()>, m: &mut Model, id: &str, sub: bool) -> usize {
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let c = stored_connect(id);
    assert_eq!(b.ingest(key, &c, NOW_MS), (c.len(), Ingested::More));
    pump(b, m);
    if sub {
        let mut body = vec![0, 1];
        body.extend(string("t"));
        body.push(2);
        let s = with_len(0x82, &body);
        assert_eq!(b.ingest(key, &s, NOW_MS), (s.len(), Ingested::More));
        pump(b, m);
    }
    key
}

/// The state a restart would recover from `disk` if the power failed now.
fn durable(disk: &SimDisk) -> LiveState {
    let copy = Arc::new(disk.durable_copy());
    let dir = std::path::Path::new(STORE_DIR);
    crate::store::recover_all_on(copy, dir)
        .expect("recover")
        .state
}

/// Deliveries owed to `id` in what `disk` keeps.
fn owed(disk: &SimDisk, id: &str) -> usize {
    durable(disk)
        .sessions
        .get(id)
        .map_or(0, |s| s.deliveries.len())
}

/// Where the power fails, counted from the publisher's QoS 2 PUBLISH.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The link stored the message in `r`'s queue; its answer has not come.
    Stored,
    /// The routing's batch is durable and the link answered; the commit is not durable.
    Answered,
    /// Everything is durable: the PUBREC has gone.
    Settled,
}

/// A stored publisher on `p` sends one QoS 2 message, which a stored subscriber on `p`
/// (offline) and node `r` want; the power fails at `cut`; `p` restarts, the publisher
/// reconnects and resends the message (DUP, same packet id). `r`'s queue and the local
/// subscriber must hold it once, whatever the cut.
#[test]
fn a_resend_after_a_power_cut_of_the_publishing_node_is_stored_once() {
    for cut in [Cut::Stored, Cut::Answered, Cut::Settled] {
        let disk = SimDisk::default();
        let mut b = stored_broker_with(&disk, cfg());
        b.set_cluster("p");
        let mut m = Model::new(1, Vec::new());
        let sub = client(&mut b, &mut m, "sub", true);
        assert!(
            b.on_closed(sub, NOW_MS).is_some(),
            "the subscriber goes offline"
        );
        let publisher = client(&mut b, &mut m, "pub", false);

        let p = publish2(7, b"m", false);
        assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
        m.take(&mut b);
        assert_eq!(m.copies(b"m"), 1, "{cut:?}: stored in r's queue");
        match cut {
            Cut::Stored => {
                end_turn(&mut b, NOW_MS);
                while b.journal_background(true) {}
                end_turn(&mut b, NOW_MS);
            }
            Cut::Answered => {
                end_turn(&mut b, NOW_MS);
                while b.journal_background(true) {}
                m.answer(&mut b);
                end_turn(&mut b, NOW_MS);
                end_turn(&mut b, NOW_MS);
            }
            Cut::Settled => pump(&mut b, &mut m),
        }
        let committed = usize::from(matches!(cut, Cut::Settled));
        assert_eq!(
            owed(&disk, "sub"),
            committed,
            "{cut:?}: recovery keeps the delivery only once its routing is committed"
        );

        // The power fails; `p` restarts on what its disk kept, with a new link run.
        let (disk, mut b) = restarted_broker(&disk, cfg());
        b.set_cluster("p");
        let mut m = Model::new(2, m.queue);
        let publisher = client(&mut b, &mut m, "pub", false);
        let p = publish2(7, b"m", true);
        assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
        pump(&mut b, &mut m);
        let rel = [0x62, 2, 0, 7];
        assert_eq!(b.ingest(publisher, &rel, NOW_MS), (4, Ingested::More));
        pump(&mut b, &mut m);

        assert_eq!(m.copies(b"m"), 1, "{cut:?}: r's queue holds it once");
        assert_eq!(owed(&disk, "sub"), 1, "{cut:?}: the local subscriber once");
    }
}

/// Turns and syncs with the link's answers held back; the answers owed, given later.
fn pump_unanswered(b: &mut Broker<()>, m: &mut Model) -> Vec<FromCluster> {
    for _ in 0..5 {
        m.take(b);
        end_turn(b, NOW_MS);
        while b.journal_background(true) {}
        end_turn(b, NOW_MS);
    }
    std::mem::take(&mut m.answers)
}

/// The QoS 2 PUBLISHes in `out` (one-byte remaining lengths), as (DUP, payload).
fn qos2_publishes(out: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut got = Vec::new();
    let mut rest = out;
    while let [first, len, ..] = *rest {
        assert!(len < 128, "short packets only");
        let body = &rest[2..2 + usize::from(len)];
        if first & 0xf6 == 0x34 {
            let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
            got.push((first & 0x08 != 0, body[2 + tlen + 2..].to_vec()));
        }
        rest = &rest[2 + usize::from(len)..];
    }
    got
}

/// Messages that are not resends are never taken for one: the same packet id again after
/// its PUBCOMP (same payload too), and, after a cut the publisher's client did not survive
/// either (it forgot its unacknowledged message), a new message under the forgotten one's
/// packet id. Each is stored in `r`'s queue and owed to the subscriber.
#[test]
fn a_new_message_is_never_taken_for_a_resend() {
    let disk = SimDisk::default();
    let mut b = stored_broker_with(&disk, cfg());
    b.set_cluster("p");
    let mut m = Model::new(1, Vec::new());
    let sub = client(&mut b, &mut m, "sub", true);
    assert!(b.on_closed(sub, NOW_MS).is_some());
    let publisher = client(&mut b, &mut m, "pub", false);
    for round in 0..2 {
        let p = publish2(7, b"same", false);
        assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
        pump(&mut b, &mut m);
        let rel = [0x62, 2, 0, 7];
        assert_eq!(b.ingest(publisher, &rel, NOW_MS), (4, Ingested::More));
        pump(&mut b, &mut m);
        assert_eq!(
            m.copies(b"same"),
            round + 1,
            "a packet id used again is a new message"
        );
    }
    let p = publish2(8, b"lost", false);
    assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
    m.take(&mut b);
    assert_eq!(m.copies(b"lost"), 1);

    let (disk, mut b) = restarted_broker(&disk, cfg());
    b.set_cluster("p");
    let mut m = Model::new(2, m.queue);
    let publisher = client(&mut b, &mut m, "pub", false);
    // A client that forgot "lost": another message under its packet id.
    let p = publish2(8, b"new", false);
    assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
    pump(&mut b, &mut m);
    assert_eq!(
        m.copies(b"new"),
        1,
        "stored, not dropped as a duplicate of \"lost\""
    );
    assert_eq!(m.copies(b"lost"), 1);
    assert_eq!(owed(&disk, "sub"), 3, "same, same, new");
}

/// The publisher's connection ends while its PUBREC waits for the link: when the link
/// answers, the routing is committed all the same (its packet id logged), so the
/// subscriber's delivery is not held for ever and a resend after a cut is recognised.
#[test]
fn a_routing_is_committed_when_its_publisher_left_before_the_links_answer() {
    let disk = SimDisk::default();
    let mut b = stored_broker_with(&disk, cfg());
    b.set_cluster("p");
    let mut m = Model::new(1, Vec::new());
    let sub = client(&mut b, &mut m, "sub", true);
    let publisher = client(&mut b, &mut m, "pub", false);
    b.drain_output(sub, &mut Vec::new());

    let p = publish2(7, b"m", false);
    assert_eq!(b.ingest(publisher, &p, NOW_MS), (p.len(), Ingested::More));
    let answers = pump_unanswered(&mut b, &mut m);
    let mut out = Vec::new();
    b.drain_output(sub, &mut out);
    assert_eq!(
        qos2_publishes(&out),
        [],
        "no QoS 2 PUBLISH before the commit"
    );
    assert!(
        b.on_closed(publisher, NOW_MS).is_some(),
        "the publisher goes"
    );
    m.answers = answers;
    pump(&mut b, &mut m);
    b.drain_output(sub, &mut out);
    assert_eq!(
        qos2_publishes(&out),
        [(false, b"m".to_vec())],
        "sent once committed"
    );
    let state = durable(&disk);
    let ids: Vec<u16> = state.sessions["pub"]
        .incoming_qos2
        .iter()
        .map(|p| p.get())
        .collect();
    assert_eq!(ids, [7], "the packet id is logged");
    assert_eq!(owed(&disk, "sub"), 1);
}

/// The receiving node: `n` stored shard cores of node `r` (the gateway is shard 0) on
/// `disk`, restarted from it as `main` starts them (recovered, laid out, restored, each
/// shard told every restored interest).
fn restarted_cores(disk: &SimDisk, n: usize) -> super::Cores {
    use crate::store::{self, Wal};
    let data = std::path::Path::new(STORE_DIR);
    let shard_of = |s: &str| crate::broker::home_shard(s, n);
    let rec = store::recover_parts_on(disk, data, n, shard_of, shard_of).expect("recover");
    store::install_on(disk, data, &rec.parts).expect("install");
    let cfg = Arc::new(Config {
        shards: n,
        ..Config::default()
    });
    let mut shards: Vec<Broker<()>> = Vec::new();
    for (i, part) in rec.parts.into_iter().enumerate() {
        let dir = store::layout::shard_dir(data, i);
        let opts = super::manual_wal_options();
        let wal = Wal::open_on(Arc::new(disk.clone()), &dir, opts, || {}).expect("log");
        let j = crate::broker::journal::Journal::new(wal, part, n, 0);
        let mut b = Broker::new(i, n, cfg.clone(), NOW_MS);
        b.attach_journal(j);
        b.restore_from_journal(&[], NOW_MS);
        b.set_cluster("r");
        shards.push(b);
    }
    let interest: Vec<crate::broker::RestoredInterest> =
        shards.iter().map(Broker::restored_interest).collect();
    for b in &mut shards {
        for (from, filters) in interest.iter().enumerate() {
            b.learn_restored_interest(from, filters);
        }
    }
    super::Cores { shards }
}

/// JetStream hands node `r`'s gateway the QoS 2 message `m` from `r`'s queue under token
/// `token`; its id is that of its `Nats-Msg-Id`.
fn from_queue(c: &mut super::Cores, token: u64) {
    let msg = crate::session::Message::plain("t", b"m", crate::protocol::QoS::ExactlyOnce);
    let id = crate::cluster::queue::received_id(b"p.q2.00000000000000aa.5.7.0badcafe.r");
    c.shards[0].on_cluster(
        FromCluster::Message {
            share: None,
            msg,
            token: Some(token),
            dedupe: Some(id),
        },
        NOW_MS,
    );
}

/// Whether shard 0 asked the link to settle `token` with JetStream (taken from its effects).
fn settled(c: &mut super::Cores, token: u64) -> bool {
    let out = std::mem::take(&mut c.shards[0].effects().cluster);
    out.iter()
        .any(|m| matches!(m, ToCluster::Settle { token: t } if *t == token))
}

/// Node `r`, two stored shard cores, takes a QoS 2 message from its queue for a stored
/// subscriber on each shard (offline: it is owed, in the log). The node's life from then
/// on is run one operation at a time (a shard's turn, its log's sync, the bus carried), and
/// at every point the node dies, by a power cut (the disk keeps what was synced) or by
/// `kill -9` (it keeps what was written), and restarts; JetStream then hands the message out
/// again unless the node had settled it (and, if it had, also as if the acknowledgement
/// was lost). Each subscriber must be owed the message exactly once: never twice (the
/// routing's deliveries are dropped by recovery unless its commit, which logs the id, is
/// durable, and a copy whose id is logged is settled without routing), never not at all
/// (the settle waits for the commit).
#[test]
fn a_queue_message_reaches_each_subscriber_once_across_a_crash_of_the_receiving_node() {
    use super::share_log::{carry, member, stored_cores, sync};
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let ids = [super::id_homed(0, 2), super::id_homed(1, 2)];
    for id in &ids {
        let at = member(&mut c, id, &[("t", 2)]);
        assert!(c.shards[at.0].on_closed(at.1, NOW_MS).is_some());
    }
    super::share_log::settle(&mut c);
    for b in &mut c.shards {
        b.set_cluster("r");
    }
    from_queue(&mut c, 1);
    let mut was_settled = false;
    let mut cuts = 0;
    for step in 0..60 {
        match step % 6 {
            0 => super::share_log::end_turn(&mut c, 0),
            1 => super::share_log::end_turn(&mut c, 1),
            2 => {
                sync(&mut c, 0);
            }
            3 => {
                sync(&mut c, 1);
            }
            4 => carry(&mut c, 0),
            _ => carry(&mut c, 1),
        }
        was_settled |= settled(&mut c, 1);
        let mut kept = vec![
            ("power cut".to_string(), disk.durable_copy()),
            ("kill -9".to_string(), disk.crash_copy()),
        ];
        // And the gateway's unsynced tail torn at every byte (a power cut while the
        // kernel wrote it back).
        use crate::store::Disk;
        let seg = super::qos2_log::last_segment(&disk);
        let synced = disk.durable_copy().len(&seg).unwrap_or(0) as usize;
        let written = disk.len(&seg).expect("segment") as usize;
        for keep in synced + 1..written {
            let torn = disk.torn_copy(&seg, keep).expect("torn copy");
            kept.push((format!("torn at {keep} of {synced}..{written}"), torn));
        }
        for (how, kept) in kept {
            let again: &[bool] = if was_settled { &[false, true] } else { &[true] };
            for &redelivered in again {
                let kept = kept.crash_copy();
                let mut r = restarted_cores(&kept, 2);
                if redelivered {
                    from_queue(&mut r, 2);
                }
                super::share_log::settle(&mut r);
                if redelivered {
                    assert!(
                        settled(&mut r, 2),
                        "step {step}, {how}: the copy is settled"
                    );
                }
                for id in &ids {
                    assert_eq!(
                        owed(&kept, id),
                        1,
                        "step {step}, {how}, settled before: {was_settled}, handed out \
                         again: {redelivered}: {id}"
                    );
                }
                cuts += 1;
            }
        }
    }
    assert!(was_settled, "the message was settled");
    assert!(cuts > 100);
}

/// Copies JetStream hands out while the first is still being routed (its acknowledgement
/// wait ran out while the log was slow; or the link's own duplicate filter caught one and
/// asks only to settle it) are neither routed nor settled before the first one's commit
/// is durable. Settled sooner, a power cut would leave the message acknowledged in
/// JetStream while recovery drops its uncommitted deliveries: lost.
#[test]
fn a_copy_that_comes_while_the_first_is_routed_is_settled_with_its_commit() {
    use super::share_log::{end_turn, member, stored_cores, sync};
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    let sub = member(&mut c, "sub", &[("t", 2)]);
    assert!(c.shards[0].on_closed(sub.1, NOW_MS).is_some());
    super::share_log::settle(&mut c);
    c.shards[0].set_cluster("r");
    from_queue(&mut c, 1);
    end_turn(&mut c, 0);
    from_queue(&mut c, 2);
    let id = crate::cluster::queue::received_id(b"p.q2.00000000000000aa.5.7.0badcafe.r");
    c.shards[0].on_cluster(
        FromCluster::Settle {
            token: 3,
            dedupe: Some(id),
        },
        NOW_MS,
    );
    let mut tokens = Vec::new();
    for _ in 0..10 {
        end_turn(&mut c, 0);
        for m in std::mem::take(&mut c.shards[0].effects().cluster) {
            if let ToCluster::Settle { token } = m {
                tokens.push(token);
                assert_eq!(owed(&disk, "sub"), 1, "settled only once committed");
            }
        }
        sync(&mut c, 0);
    }
    tokens.sort_unstable();
    assert_eq!(tokens, [1, 2, 3], "each copy settled");
    assert_eq!(owed(&disk, "sub"), 1, "routed once");
}

/// Where a resend of a message comes from (`a_resend_while_…`).
#[derive(Debug, Clone, Copy)]
enum Resender {
    /// The first copy's own connection.
    SameLink,
    /// A new connection of the same stored client, which took the session over.
    Takeover,
}

/// When a resend comes, against the first copy's PUBREC.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The first copy's PUBREC waits in the cluster ack gate (the link has not answered).
    Gate,
    /// The link answered, so the gate let the PUBREC go to the journal, but the commit is
    /// not logged yet (the routing's batch is not durable).
    Answered,
}

/// A stored publisher's QoS 2 message comes again (same packet id: DUP on its own
/// connection, or after a takeover) while the first copy's PUBREC still waits for the
/// cluster link (`HeldPubAck::PubRec`), or after the link answered but before the commit
/// is logged. The resend's PUBREC must not leave before the first copy's commit (packet id
/// and routing, `IncomingQos2Commit`) is durable — a cut would drop the routing while the
/// client, holding a PUBREC, only sends PUBREL — and each PUBLISH is answered exactly
/// once. Before the fix, a resend while the first copy was in the gate was answered once
/// its own turn was durable (after a takeover), or with the first copy's commit logged but
/// not durable (on the same connection, riding behind it in the gate).
#[test]
fn a_resend_while_the_first_copys_pubrec_waits_for_the_cluster_is_answered_once_its_commit_is_durable(
) {
    use Resender::{SameLink, Takeover};
    for (resender, stage) in [
        (SameLink, Stage::Gate),
        (Takeover, Stage::Gate),
        (SameLink, Stage::Answered),
        (Takeover, Stage::Answered),
    ] {
        let case = format!("{resender:?}, {stage:?}");
        let disk = SimDisk::default();
        let mut b = stored_broker_with(&disk, cfg());
        b.set_cluster("p");
        let mut m = Model::new(1, Vec::new());
        let sub = client(&mut b, &mut m, "sub", true);
        assert!(
            b.on_closed(sub, NOW_MS).is_some(),
            "the subscriber goes offline"
        );
        let first = client(&mut b, &mut m, "pub", false);
        b.drain_output(first, &mut Vec::new());

        let p = publish2(7, b"m", false);
        assert_eq!(b.ingest(first, &p, NOW_MS), (p.len(), Ingested::More));
        m.take(&mut b);
        assert_eq!(m.copies(b"m"), 1, "{case}: stored in r's queue");
        // The link's answer, held back for now.
        let mut held = std::mem::take(&mut m.answers);
        end_turn(&mut b, NOW_MS);
        let key = match resender {
            SameLink => first,
            Takeover => {
                let key = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
                let c = stored_connect("pub");
                assert_eq!(b.ingest(key, &c, NOW_MS), (c.len(), Ingested::More));
                // The registry's answer, and the CONNACK's records durable.
                for _ in 0..3 {
                    m.take(&mut b);
                    m.answer(&mut b);
                    end_turn(&mut b, NOW_MS);
                    while b.journal_background(true) {}
                }
                let mut out = Vec::new();
                b.drain_output(key, &mut out);
                assert_eq!(out.first(), Some(&0x20), "{case}: CONNACK");
                key
            }
        };
        let answer_at = match stage {
            Stage::Gate => 4,
            Stage::Answered => {
                m.answers.append(&mut held);
                m.answer(&mut b);
                0
            }
        };
        let p = publish2(7, b"m", true);
        assert_eq!(b.ingest(key, &p, NOW_MS), (p.len(), Ingested::More));

        let pubrec = [0x50, 2, 0, 7];
        let mut seen = 0;
        for step in 0..24 {
            if step == answer_at {
                m.answers.append(&mut held);
            }
            m.take(&mut b);
            m.answer(&mut b);
            if step % 2 == 0 {
                end_turn(&mut b, NOW_MS);
            } else {
                while b.journal_background(true) {}
            }
            let mut out = Vec::new();
            b.drain_output(key, &mut out);
            seen += out.windows(4).filter(|w| *w == pubrec).count();
            if seen > 0 {
                let state = durable(&disk);
                let ids: Vec<u16> = state.sessions["pub"]
                    .incoming_qos2
                    .iter()
                    .map(|p| p.get())
                    .collect();
                assert_eq!(
                    (ids, owed(&disk, "sub")),
                    (vec![7], 1),
                    "{case}, step {step}: a PUBREC was sent, so a cut must keep the id and \
                     the delivery"
                );
            }
        }
        let expected = match resender {
            SameLink => 2,
            Takeover => 1,
        };
        assert_eq!(seen, expected, "{case}: each PUBLISH answered once");
        assert_eq!(owed(&disk, "sub"), 1, "{case}: routed once");
        assert_eq!(m.copies(b"m"), 1, "{case}: stored once");
    }
}
