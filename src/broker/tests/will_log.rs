//! Wills on the log (docs/persistence.md, "Wills"): a clean session's Will is logged at
//! its CONNECT (its CONNACK waits for it) and ended by a DISCONNECT or its publication; a
//! stored session's delayed Will published by its timer leaves the session's record. What
//! a restart would do is read back from what the simulated disk would keep through a power
//! cut now.

use super::{
    end_turn, id_homed, restarted_broker, stored_broker, stored_connect_packet, string,
    subscribe_packet, with_len, NOW_MS, STORE_DIR,
};
use crate::broker::{Broker, Ingested};
use crate::store::{LiveState, SimDisk};

/// The state a restart would recover from `disk` if the power failed now.
fn durable(disk: &SimDisk) -> LiveState {
    let copy = std::sync::Arc::new(disk.durable_copy());
    let dir = std::path::Path::new(STORE_DIR);
    crate::store::recover_all_on(copy, dir)
        .expect("recover")
        .state
}

/// CONNECT, MQTT 5, with a QoS 1 Will on `w/<id>`: a clean session (`expiry_s` `None`) or
/// a stored one, and a Will Delay Interval if `delay_s`.
pub(super) fn will_connect(id: &str, expiry_s: Option<u32>, delay_s: Option<u32>) -> Vec<u8> {
    let flags = match expiry_s {
        None => 0x0e,
        Some(_) => 0x0c,
    };
    let mut body = string("MQTT");
    body.extend_from_slice(&[5, flags, 0, 60]);
    let props: Vec<u8> = expiry_s.map_or(Vec::new(), |e| [&[0x11][..], &e.to_be_bytes()].concat());
    body.push(props.len() as u8);
    body.extend(props);
    body.extend(string(id));
    let will_props: Vec<u8> =
        delay_s.map_or(Vec::new(), |d| [&[0x18][..], &d.to_be_bytes()].concat());
    body.push(will_props.len() as u8);
    body.extend(will_props);
    body.extend(string(&format!("w/{id}")));
    body.extend(string("gone"));
    with_len(0x10, &body)
}

/// The log syncs and the turn's held work runs, twice (a Will's `WillDone` is logged once
/// its deliveries are durable, and is itself durable one round later).
fn sync_rounds(b: &mut Broker<()>, now: u64) {
    for _ in 0..2 {
        end_turn(b, now);
        while b.journal_background(true) {}
        end_turn(b, now);
    }
}

/// Whether `disk` would give a restart a Will to publish (armed or pending).
fn owed_wills(disk: &SimDisk) -> usize {
    let s = durable(disk);
    s.armed_wills.len() + s.pending_wills.len()
}

/// A clean session with a Will: its CONNACK waits until the Will's record is durable, and
/// a DISCONNECT ends it in the log, so a restart publishes nothing.
#[test]
fn a_clean_sessions_will_is_logged_at_connect_and_ended_by_disconnect() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let input = will_connect(&id_homed(0, 1), None, None);
    assert_eq!(b.ingest(key, &input, NOW_MS), (input.len(), Ingested::More));
    let held = |b: &Broker<()>| b.links().get(key).is_some_and(|l| l.output_held());
    assert!(held(&b), "the CONNACK waits for the Will's record");
    end_turn(&mut b, NOW_MS);
    assert!(held(&b));
    assert_eq!(owed_wills(&disk), 0, "written, not durable");
    sync_rounds(&mut b, NOW_MS);
    assert!(!held(&b), "durable: released");
    assert_eq!(durable(&disk).armed_wills.len(), 1, "armed");

    let (_, end) = b.ingest(key, &[0xe0, 0], NOW_MS);
    assert_eq!(end, Ingested::Close);
    assert_eq!(b.on_closed(key, NOW_MS), Some(()));
    sync_rounds(&mut b, NOW_MS);
    assert_eq!(owed_wills(&disk), 0, "the DISCONNECT discarded it");
}

/// A clean session's connection breaks: its Will is published under the number it was
/// armed with (pending, replacing the armed record), then done once its deliveries are
/// durable. A session without a Will logs nothing and its CONNACK does not wait.
#[test]
fn a_clean_sessions_will_published_at_a_close_is_logged_pending_then_done() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let plain = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    let input = super::connect_packet(&id_homed(0, 1));
    assert_eq!(b.ingest(plain, &input, NOW_MS).1, Ingested::More);
    assert!(!b.links().get(plain).is_some_and(|l| l.output_held()));

    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let input = will_connect("dying", None, None);
    assert_eq!(b.ingest(key, &input, NOW_MS).1, Ingested::More);
    sync_rounds(&mut b, NOW_MS);
    let s = durable(&disk);
    let armed: Vec<u64> = s.armed_wills.keys().copied().collect();
    assert_eq!(armed.len(), 1);
    // Named with its client, whose home shard publishes it after a crash.
    let armed_by = s.armed_wills.values().next().map(|w| w.client_id.clone());
    assert_eq!(armed_by, Some(Some("dying".to_owned())));

    b.close_link(key);
    assert_eq!(b.on_closed(key, NOW_MS), Some(()));
    end_turn(&mut b, NOW_MS);
    while b.journal_background(true) {}
    let s = durable(&disk);
    assert!(s.armed_wills.is_empty());
    assert_eq!(
        s.pending_wills.keys().copied().collect::<Vec<_>>(),
        armed,
        "pending under its number"
    );
    let pending_by = s.pending_wills.values().next().map(|w| w.client_id.clone());
    assert_eq!(pending_by, Some(Some("dying".to_owned())), "and its client");
    sync_rounds(&mut b, NOW_MS);
    assert_eq!(owed_wills(&disk), 0, "done");
}

/// A stored session's delayed Will, published by its timer after the connection broke,
/// is taken out of the session's record (the disconnect time kept): once its `WillDone`
/// is durable a restart publishes it neither as pending nor after its delay again.
#[test]
fn a_delayed_will_published_by_its_timer_is_not_published_again_after_a_restart() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let input = will_connect("delayed", Some(100), Some(1));
    assert_eq!(b.ingest(key, &input, NOW_MS).1, Ingested::More);
    sync_rounds(&mut b, NOW_MS);
    b.close_link(key);
    assert_eq!(b.on_closed(key, NOW_MS), Some(()));
    sync_rounds(&mut b, NOW_MS);
    let s = durable(&disk);
    let at = s.sessions["delayed"].disconnected_at_unix_ms;
    assert!(at.is_some(), "disconnected");
    assert!(s.sessions["delayed"].info.will.is_some(), "the Will waits");
    assert_eq!(owed_wills(&disk), 0);

    let later = NOW_MS + 1_000;
    b.on_timers(later);
    sync_rounds(&mut b, later);
    let s = durable(&disk);
    let sess = &s.sessions["delayed"];
    assert!(sess.info.will.is_none(), "published: out of the record");
    assert_eq!(
        sess.disconnected_at_unix_ms, at,
        "expiry still counts from then"
    );
    assert_eq!(sess.info.expiry_interval_s, 100);
    assert_eq!(owed_wills(&disk), 0, "and done");
}

/// A stored session connected when the broker stopped: its Will (no delay) is due at the
/// restart's first turn. That turn runs it before reading the CONNECT with which its
/// client comes back first thing, so the Will is published rather than cancelled (a
/// reconnect cancels only a Will still waiting out its delay [MQTT-3.1.3-9]).
#[test]
fn a_restored_will_due_at_restart_is_published_when_its_client_reconnects_first() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let watcher = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    b.ingest(watcher, &stored_connect_packet("watcher"), NOW_MS);
    b.ingest(watcher, &subscribe_packet("w/#"), NOW_MS);
    sync_rounds(&mut b, NOW_MS);
    b.close_link(watcher);
    assert_eq!(b.on_closed(watcher, NOW_MS), Some(()));
    let dying = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    let connect = will_connect("dying", Some(100), None);
    assert_eq!(b.ingest(dying, &connect, NOW_MS).1, Ingested::More);
    sync_rounds(&mut b, NOW_MS);
    let s = durable(&disk);
    assert!(
        s.sessions["dying"].info.will.is_some(),
        "the Will is stored"
    );
    assert!(s.sessions["watcher"].deliveries.is_empty());

    // The power fails while "dying" is connected; it reconnects first thing.
    let (disk, mut b) = restarted_broker(&disk, crate::config::Config::default());
    b.begin_turn(NOW_MS);
    let again = b.accept(([127, 0, 0, 1], 3).into(), (), NOW_MS);
    assert_eq!(b.ingest(again, &connect, NOW_MS).1, Ingested::More);
    sync_rounds(&mut b, NOW_MS);
    b.on_timers(NOW_MS + 1_000);
    sync_rounds(&mut b, NOW_MS + 1_000);
    let s = durable(&disk);
    assert_eq!(
        s.sessions["watcher"].deliveries.len(),
        1,
        "the Will reached the offline subscriber"
    );
    assert!(
        s.sessions["dying"].info.will.is_some(),
        "the new CONNECT's Will"
    );
}

/// A stored session resumed (no Clean Start) with Session Expiry 0: the session now ends
/// with its connection, a crash included, so the log ends it at that CONNECT (before, its
/// record kept the old expiry and the old delayed Will, which the reconnect had cancelled:
/// a crash while connected brought the session back and published that stale Will after
/// its delay). Its new Will is armed like any clean session's, and the CONNACK waits for
/// both records.
#[test]
fn a_stored_session_resumed_with_expiry_0_is_not_restored_with_its_old_parameters() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let id = id_homed(0, 3);
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let input = will_connect(&id, Some(100), Some(30));
    assert_eq!(b.ingest(key, &input, NOW_MS).1, Ingested::More);
    sync_rounds(&mut b, NOW_MS);
    b.close_link(key);
    assert_eq!(b.on_closed(key, NOW_MS), Some(()));
    sync_rounds(&mut b, NOW_MS);
    let s = durable(&disk);
    assert!(
        s.sessions[&id].info.will.is_some(),
        "the delayed Will waits"
    );

    let key = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    let input = will_connect(&id, Some(0), None);
    assert_eq!(b.ingest(key, &input, NOW_MS).1, Ingested::More);
    let held = |b: &Broker<()>| b.links().get(key).is_some_and(|l| l.output_held());
    assert!(held(&b), "the CONNACK waits for the records");
    sync_rounds(&mut b, NOW_MS);
    assert!(!held(&b));
    let s = durable(&disk);
    assert!(
        !s.sessions.contains_key(&id),
        "a crash now must not restore the session (expiry {:?}, Will {:?})",
        s.sessions.get(&id).map(|x| x.info.expiry_interval_s),
        s.sessions.get(&id).map(|x| x.info.will.is_some())
    );
    assert_eq!(s.armed_wills.len(), 1, "the new Will, armed");

    let (_, end) = b.ingest(key, &[0xe0, 0], NOW_MS);
    assert_eq!(end, Ingested::Close);
    assert_eq!(b.on_closed(key, NOW_MS), Some(()));
    sync_rounds(&mut b, NOW_MS);
    let s = durable(&disk);
    assert!(!s.sessions.contains_key(&id));
    assert_eq!(
        owed_wills(&disk),
        0,
        "the DISCONNECT discarded the new Will"
    );
}
