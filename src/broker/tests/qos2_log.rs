//! A QoS 2 routing's deliveries on the log (docs/persistence.md, "What is acknowledged,
//! exactly"): a delivery of a routing whose commit is not durable never comes back after
//! a power cut, however the cut tears the batch that logged it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::share_log::{end_turn, member, settle, stored_cores};
use super::{publish_packet, NOW_MS, STORE_DIR};
use crate::broker::Ingested;
use crate::store::{self, Disk, SimDisk};

/// Shard 0's newest log segment on `disk`.
pub(super) fn last_segment(disk: &SimDisk) -> PathBuf {
    let dir = store::layout::shard_dir(Path::new(STORE_DIR), 0);
    let mut names: Vec<String> = disk
        .list(&dir)
        .expect("the shard's directory")
        .into_iter()
        .filter(|(n, is_dir)| !is_dir && n.ends_with(".wal"))
        .map(|(n, _)| n)
        .collect();
    names.sort();
    dir.join(names.last().expect("a segment"))
}

/// The QoS of each delivery of client `id` in what `disk` keeps.
fn deliveries(disk: SimDisk, id: &str) -> Vec<u8> {
    let rec = store::recover_all_on(Arc::new(disk), Path::new(STORE_DIR)).expect("recover");
    let s = rec.state.sessions.get(id).expect("the session is durable");
    s.deliveries.iter().map(|d| d.qos).collect()
}

/// A stored publisher's QoS 2 message to a stored subscriber (online: queued and sent in
/// one record; offline: queued). Its batch is written, not synced, and the power fails
/// while it is being written back: whatever prefix of the batch survives, the commit is
/// not in it, so the delivery must not come back (a plain delivery would be delivered
/// again when the publisher, which saw no PUBREC, resends). Once the commit is durable it
/// does.
#[test]
fn a_torn_batch_never_keeps_an_uncommitted_qos2_delivery() {
    for online in [true, false] {
        let disk = SimDisk::default();
        let mut c = stored_cores(&disk, 1);
        let sub = member(&mut c, "sub", &[("t", 2)]);
        if !online {
            assert!(c.shards[0].on_closed(sub.1, NOW_MS).is_some());
            settle(&mut c);
        }
        let (_, key) = member(&mut c, "pub", &[]);
        let seg = last_segment(&disk);
        let before = disk.len(&seg).expect("segment") as usize;
        let mut p = publish_packet("t", b"m");
        p[0] = 0x34;
        let used = c.shards[0].ingest(key, &p, NOW_MS);
        assert_eq!(used, (p.len(), Ingested::More));
        end_turn(&mut c, 0);
        assert_eq!(last_segment(&disk), seg, "one segment");
        let after = disk.len(&seg).expect("segment") as usize;
        assert!(after > before, "the routing's batch is written");
        for keep in before..=after {
            let torn = disk.torn_copy(&seg, keep).expect("torn copy");
            assert_eq!(
                deliveries(torn, "sub"),
                Vec::<u8>::new(),
                "online {online}: batch of bytes {before}..{after} torn at {keep}"
            );
        }
        settle(&mut c);
        assert_eq!(
            deliveries(disk.durable_copy(), "sub"),
            [2],
            "online {online}: committed, so kept"
        );
    }
}

/// No bridge message.
const NONE: [(String, bool); 0] = [];

/// The recovered messages of bridge (local client id) `local` in what `disk` keeps: remote
/// topic, and whether it was sent (has a packet id).
fn bridge_topics(disk: SimDisk, local: &str) -> Vec<(String, bool)> {
    let rec = store::recover_all_on(Arc::new(disk), Path::new(STORE_DIR)).expect("recover");
    rec.state.bridges.get(local).map_or(Vec::new(), |b| {
        let m = b.messages.values();
        m.map(|m| (m.msg.topic.to_string(), m.packet_id.is_some()))
            .collect()
    })
}

/// A bridge forwarding `a/#` out at QoS 2 to a scripted remote, on one stored shard core:
/// a stored publisher's QoS 2 message is queued for the remote (its `Enqueued` record in
/// the routing's batch, with the routing), not sent before the commit, and kept by
/// recovery only once the commit is durable, however a cut tears the batch before. Once
/// committed, its PUBLISH waits for its packet id's record (`Sent`), and its PUBREL for
/// "PUBREC received", so a cut at any point resends it under the same id, or its PUBREL.
#[test]
fn a_bridge_forwards_a_qos2_message_only_once_its_commit_is_durable() {
    use crate::bridge::{Bridge, Clock, Limits, Offered};
    let text = "connection up\naddress 127.0.0.1:1\ntopic a/# out 2\nremote_clientid br\n\
                local_clientid lb\nnotifications false";
    let mut p = crate::config::bridge::BridgeParser::default();
    for (i, line) in text.lines().enumerate() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        p.line(k, v, i + 1).expect("bridge line");
    }
    let bridges = p.finish().expect("bridge block");
    let cfg = crate::config::Config {
        shards: 1,
        bridges: bridges.clone(),
        ..crate::config::Config::default()
    };
    let disk = SimDisk::default();
    let mut c = super::share_log::stored_cores_with(&disk, cfg);
    let mut b = Bridge::new(&bridges[0], "host", Limits::default(), 1, NOW_MS);
    // Up: CONNECT out, CONNACK in.
    b.tick(NOW_MS);
    while b.poll_action().is_some() {}
    b.socket_connected(NOW_MS);
    b.receive(NOW_MS, &[0x20, 2, 0, 0]);
    while b.poll_action().is_some() {}
    assert!(b.is_up());
    let sent_so_far = b.output().len();
    // One step of the shard's bridges (`shard::bridges::Bridges::step`, by hand).
    let step = |c: &mut super::Cores, b: &mut Bridge| {
        let shard = &mut c.shards[0];
        b.learn_commits(NOW_MS, shard.qos2_commits());
        for (_, batch) in shard.take_bridge_durable() {
            b.records_durable(NOW_MS, batch);
        }
        b.set_logged(true);
        for (_, m) in std::mem::take(&mut shard.effects().bridge_offers) {
            let o = Offered {
                topic: &m.topic,
                payload: &Arc::from(&m.payload[..]),
                qos: m.qos,
                retain: m.retain,
                props: None,
                expires_at_ms: None,
                txn: m.txn,
            };
            b.offer_message(NOW_MS, &o, false);
        }
        let clock = Clock {
            now_ms: NOW_MS,
            unix_ms: 1_700_000_000_000,
        };
        let records = b.take_records();
        let any = !records.is_empty();
        for r in records {
            shard.log_bridge("lb", r.to_op(clock));
        }
        if any {
            assert!(shard.hold_bridge_records(0, b.record_batches()));
        }
    };

    let (_, key) = member(&mut c, "pub", &[]);
    let seg = last_segment(&disk);
    let before = disk.len(&seg).expect("segment") as usize;
    let mut p = publish_packet("a/x", b"m");
    p[0] = 0x34;
    assert_eq!(
        c.shards[0].ingest(key, &p, NOW_MS),
        (p.len(), Ingested::More)
    );
    step(&mut c, &mut b);
    end_turn(&mut c, 0);
    assert_eq!(
        b.output().len(),
        sent_so_far,
        "no PUBLISH before the commit"
    );
    assert_eq!(b.depth(), (1, 0));
    let after = disk.len(&seg).expect("segment") as usize;
    assert!(after > before);
    for keep in before..=after {
        let torn = disk.torn_copy(&seg, keep).expect("torn copy");
        assert_eq!(
            bridge_topics(torn, "lb"),
            NONE,
            "torn at {keep} of {before}..{after}"
        );
    }
    // Durable, not yet committed: a cut now still drops it.
    assert!(c.shards[0].journal_background(true));
    assert_eq!(bridge_topics(disk.durable_copy(), "lb"), NONE);
    // Turns until the PUBLISH leaves: at that moment its packet id is durable.
    for _ in 0..20 {
        if b.output().len() > sent_so_far {
            break;
        }
        end_turn(&mut c, 0);
        super::share_log::sync(&mut c, 0);
        step(&mut c, &mut b);
    }
    assert!(b.output().len() > sent_so_far, "sent once committed");
    let publish = b.output()[sent_so_far..].to_vec();
    assert_eq!(publish[0], 0x34, "a QoS 2 PUBLISH, DUP 0: {publish:02x?}");
    let pid = [publish[publish.len() - 3], publish[publish.len() - 2]];
    assert_eq!(b.depth(), (0, 1));
    let durable = bridge_topics(disk.durable_copy(), "lb");
    assert_eq!(
        durable,
        [("a/x".to_string(), true)],
        "sent under a durable id"
    );
    // PUBREC: the PUBREL waits for its record.
    let n = b.output().len();
    b.receive(NOW_MS, &[0x50, 2, pid[0], pid[1]]);
    step(&mut c, &mut b);
    assert_eq!(
        b.output().len(),
        n,
        "no PUBREL before its record is durable"
    );
    for _ in 0..20 {
        if b.output().len() > n {
            break;
        }
        end_turn(&mut c, 0);
        super::share_log::sync(&mut c, 0);
        step(&mut c, &mut b);
    }
    assert_eq!(
        &b.output()[n..],
        [0x62, 2, pid[0], pid[1]],
        "then the PUBREL"
    );
    b.receive(NOW_MS, &[0x70, 2, pid[0], pid[1]]);
    step(&mut c, &mut b);
    settle(&mut c);
    assert_eq!(b.depth(), (0, 0));
    assert_eq!(bridge_topics(disk.durable_copy(), "lb"), NONE, "done");
}

/// The commit of a stored publisher's QoS 2 message logs its packet id and the routing's
/// commit. Torn at any byte, the batch that holds them must keep both or neither: the id
/// without the commit would make the publisher's resend look routed (acknowledged) while
/// recovery dropped the routing's deliveries — the message lost; the commit without the
/// id would deliver the resend a second time.
#[test]
fn a_torn_commit_keeps_the_packet_id_and_the_commit_together() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    member(&mut c, "sub", &[("t", 2)]);
    let (_, key) = member(&mut c, "pub", &[]);
    let mut p = publish_packet("t", b"m");
    p[0] = 0x34;
    assert_eq!(
        c.shards[0].ingest(key, &p, NOW_MS),
        (p.len(), Ingested::More)
    );
    end_turn(&mut c, 0);
    super::share_log::sync(&mut c, 0);
    // The routing is durable: this turn logs the commit, the next writes it.
    end_turn(&mut c, 0);
    let seg = last_segment(&disk);
    let before = disk.len(&seg).expect("segment") as usize;
    end_turn(&mut c, 0);
    let after = disk.len(&seg).expect("segment") as usize;
    assert!(after > before, "the commit's batch is written");
    for keep in before..=after {
        let torn = disk.torn_copy(&seg, keep).expect("torn copy");
        let rec = store::recover_all_on(Arc::new(torn), Path::new(STORE_DIR)).expect("recover");
        let id_kept = !rec.state.sessions["pub"].incoming_qos2.is_empty();
        let delivered = rec.state.sessions["sub"].deliveries.len();
        assert_eq!(
            (id_kept, delivered),
            if id_kept { (true, 1) } else { (false, 0) },
            "torn at {keep} of {before}..{after}"
        );
    }
    settle(&mut c);
}

/// Power seed 9,423: a stored publisher's QoS 2 message is routed (not yet committed),
/// the publisher takes its session over and resends it (DUP, same packet id) on the new
/// connection. The resend is recognised by the id kept in memory, and answered: that
/// PUBREC must not leave before the first copy's commit (id and routing) is durable, or a
/// cut drops the routing while the client, holding a PUBREC, sends only PUBREL. At every
/// step, a PUBREC on either connection means a power cut keeps the id and the delivery.
#[test]
fn a_resend_after_a_takeover_is_answered_only_once_the_first_copys_commit_is_durable() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    member(&mut c, "sub", &[("t", 2)]);
    let first = member(&mut c, "pub", &[]);
    c.output(first);
    let mut p = publish_packet("t", b"m");
    p[0] = 0x34;
    assert_eq!(
        c.shards[0].ingest(first.1, &p, NOW_MS),
        (p.len(), Ingested::More)
    );
    end_turn(&mut c, 0);
    // The takeover and the resend, before the routing's batch is synced.
    let key = c.shards[0].accept(([127, 0, 0, 1], 3).into(), (), NOW_MS);
    let mut input = super::stored_connect_packet("pub");
    p[0] = 0x3c;
    input.extend_from_slice(&p);
    assert_eq!(
        c.shards[0].ingest(key, &input, NOW_MS),
        (input.len(), Ingested::More)
    );
    let second = (0, key);
    let pubrec = [0x50, 2, 0, 2];
    let mut seen = false;
    for step in 0..20 {
        end_turn(&mut c, 0);
        let out = c.output(second);
        seen |= out.windows(4).any(|w| w == pubrec);
        let rec = store::recover_all_on(Arc::new(disk.durable_copy()), Path::new(STORE_DIR))
            .expect("recover");
        let id_kept = !rec.state.sessions["pub"].incoming_qos2.is_empty();
        let delivered = rec.state.sessions["sub"].deliveries.len();
        if seen {
            assert_eq!(
                (id_kept, delivered),
                (true, 1),
                "step {step}: PUBREC sent, so a cut must keep the id and the delivery"
            );
        }
        super::share_log::sync(&mut c, 0);
    }
    assert!(seen, "the resend is answered once the commit is durable");
    settle(&mut c);
}
