//! CONNECT: client identifiers, the home shard, takeover, session resumption, CONNACK.

use super::{deliver, home_shard, Broker, LinkState, Verdict};
use crate::log::Level;
use crate::log_at;
use crate::protocol::{self, Connect, Packet, Properties, ReasonCode, Version};
use crate::session::{FlightState, Message, StoredWill};

/// Link timer key kinds (top byte of a timer key).
pub(super) const TIMER_LINK: u64 = 1;
/// Session expiry timer.
pub(super) const TIMER_SESSION_EXPIRY: u64 = 2;
/// Delayed Will timer.
pub(super) const TIMER_WILL: u64 = 3;

/// Pack a timer key: kind, 24-bit generation, 32-bit index.
pub(super) fn timer_key(kind: u64, gen: u32, index: usize) -> u64 {
    (kind << 56) | (u64::from(gen & 0x00ff_ffff) << 32) | (index as u64 & 0xffff_ffff)
}

impl<X> Broker<X> {
    /// A new connection on this shard, with the shard's part `io`; arms its CONNECT
    /// deadline and returns its key.
    pub fn accept(&mut self, peer: std::net::SocketAddr, io: X, now_ms: u64) -> usize {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let key = self.links.insert(super::Conn {
            link: super::Link::new(gen, peer, now_ms),
            tx: crate::txbuf::TxBuf::default(),
            io,
        });
        let deadline = now_ms + self.cfg.connect_timeout_ms;
        let id = self
            .timers
            .insert(deadline, timer_key(TIMER_LINK, gen, key));
        if let Some(link) = self.links.get_mut(key) {
            link.timer = Some(id);
        }
        if crate::log_sink::connection_messages() {
            log_at!(
                Level::Notice,
                "New connection from {peer} on shard {}.",
                self.shard_id
            );
        }
        key
    }

    pub(super) fn on_connect(&mut self, key: usize, c: &Connect<'_>, now_ms: u64) -> Verdict {
        if let Some(link) = self.links.get_mut(key) {
            link.version = c.version;
        }
        let id: Box<str> = if c.client_id.is_empty() {
            if !c.clean_start && c.version != Version::V5 {
                // [MQTT-3.1.3-8]: an empty id needs Clean Session = 1 in 3.x.
                return self.refuse(key, ReasonCode::ClientIdentifierNotValid, "empty client id");
            } else {
                self.assign_id()
            }
        } else {
            c.client_id.into()
        };
        let home = home_shard(&id, self.shards);
        if home != self.shard_id {
            return Verdict::Handoff { home };
        }
        if let Some((reference, permanent)) = self.cfg.redirect.clone() {
            return self.redirect(key, c.version, &reference, permanent);
        }
        if let Some(v) = self.check_connect(c) {
            return self.refuse(key, v, "CONNECT refused");
        }
        if self.pressure >= super::memory::MemoryPressure::Refuse {
            let reason = match c.version {
                Version::V5 => ReasonCode::QuotaExceeded,
                _ => ReasonCode::ServerUnavailable,
            };
            return self.refuse(key, reason, "memory_limit reached");
        }
        if let Some(link) = self.links.get_mut(key) {
            link.client_id = Some(id);
        }
        if c.properties.authentication_method.is_some() {
            return self.start_auth(key, c);
        }
        self.login(key, c, now_ms)
    }

    /// A reason to refuse an otherwise well-formed CONNECT.
    fn check_connect(&self, c: &Connect<'_>) -> Option<ReasonCode> {
        if c.will
            .as_ref()
            .is_some_and(|w| !crate::topic::valid_topic_name(w.topic))
        {
            return Some(ReasonCode::TopicNameInvalid);
        }
        if c.version != Version::V5 && keepalive_refused_v3(c.keep_alive, self.cfg.max_keepalive) {
            // 3.x cannot be told a lower keepalive; Mosquitto refuses with "identifier rejected".
            return Some(ReasonCode::ClientIdentifierNotValid);
        }
        None
    }

    /// A fresh client id that hashes to this shard, so the connection stays here.
    fn assign_id(&mut self) -> Box<str> {
        loop {
            let nonce = self.sessions.next_nonce();
            // In a cluster the node's name keeps ids apart across nodes.
            let node = self
                .cluster
                .as_deref()
                .map_or(String::new(), |n| format!("{n}-"));
            let id = format!(
                "shardmq-{node}{:x}-{:x}",
                self.shard_id,
                nonce.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            );
            if home_shard(&id, self.shards) == self.shard_id {
                return id.into();
            }
        }
    }

    /// Server redirection (MQTT 5 §4.11): CONNACK 0x9C or 0x9D naming the other server;
    /// 3.x has no such code, so its clients are told the server is unavailable.
    fn redirect(
        &mut self,
        key: usize,
        version: Version,
        reference: &str,
        permanent: bool,
    ) -> Verdict {
        let reason = match (version, permanent) {
            (Version::V5, false) => ReasonCode::UseAnotherServer,
            (Version::V5, true) => ReasonCode::ServerMoved,
            _ => ReasonCode::ServerUnavailable,
        };
        let props = Properties {
            server_reference: Some(reference),
            ..Properties::default()
        };
        self.send_connack(key, false, reason, Some(props));
        self.close(key, None, "redirected")
    }

    pub(super) fn refuse(&mut self, key: usize, reason: ReasonCode, why: &str) -> Verdict {
        self.send_connack(key, false, reason, None);
        self.close(key, None, why)
    }

    /// Accept a CONNECT that passed every check (and authentication, if it asked for it):
    /// take over or create the session, attach it, send CONNACK, resume deliveries.
    pub(super) fn complete_connect(&mut self, key: usize, c: &Connect<'_>, now_ms: u64) -> Verdict {
        let Some(id) = self.links.get(key).and_then(|l| l.client_id.clone()) else {
            return self.close(key, None, "CONNECT without a client id");
        };
        if let Some(why) = self.identity_refusal(key, c, &id) {
            return self.refuse_login(key, c, super::login::Refusal::NotAuthorized, why);
        }
        if self.needs_claim(key, c) {
            return self.claim(key, c, &id);
        }
        let assigned = c.client_id.is_empty();
        // What this CONNECT logs (its session, or the end of the one it replaces) must be
        // durable before its CONNACK, and all that follows it, leaves.
        let mark = self.journal_mark();
        let expiry_s = match c.version {
            Version::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            _ if c.clean_start => 0,
            _ => u32::MAX,
        };
        let (s, mut present) = self.take_over_or_create(&id, c.clean_start, expiry_s, now_ms);
        if let Some(h) = self.handover_in.take() {
            // The session came from another node (cluster): it is present.
            present = h.exists;
            self.install_handover(s, *h);
        }
        let keep_alive = granted_keepalive(c.version, c.keep_alive, self.cfg.max_keepalive);
        let mount = self.links.get(key).and_then(|l| l.mount.clone());
        let will = c.will.as_ref().map(|w| {
            Box::new(StoredWill {
                msg: Message::from_publish(
                    &protocol::Publish {
                        dup: false,
                        qos: w.qos,
                        retain: w.retain,
                        topic: w.topic,
                        packet_id: None,
                        properties: w.properties,
                        payload: w.payload,
                    },
                    super::link::mounted(mount.as_deref(), w.topic)
                        .as_ref()
                        .into(),
                    now_ms,
                    self.sessions.get(s).map_or(0, |x| x.uid),
                ),
                delay_s: w.properties.will_delay_interval.unwrap_or(0),
                expiry_s: w.properties.message_expiry_interval,
                log_id: 0,
            })
        });
        let mut will = will;
        self.log_session(s, c.version.level(), will.as_deref());
        self.arm_will(s, will.as_deref_mut());
        self.backup_subs(s);
        self.attach(key, s, c, keep_alive, will, &id, now_ms);
        let ka_override = (keep_alive != c.keep_alive).then_some(keep_alive);
        let response = match (
            &self.cfg.response_information,
            c.properties.request_response_information,
        ) {
            (Some(prefix), Some(1)) => Some(format!("{prefix}{id}")),
            _ => None,
        };
        self.hold_output_if_logged(key, mark);
        self.send_connack_ok(
            key,
            present,
            assigned.then_some(&*id),
            ka_override,
            response.as_deref(),
        );
        if crate::log_sink::connection_messages() {
            let peer = self.links.get(key).map(|l| l.peer);
            log_at!(
                Level::Notice,
                "New client connected from {} as {id} (p{}, c{}, k{}{}).",
                peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
                c.version.level(),
                u8::from(c.clean_start),
                keep_alive,
                c.username.map_or(String::new(), |u| format!(", u'{u}'"))
            );
        }
        self.share_member_online(s);
        self.resend_inflight(s, now_ms);
        self.pump(s, now_ms);
        Verdict::Continue
    }

    /// Why an authenticated CONNECT may still not proceed: its Will topic is not writable
    /// under the ACL, or its client id belongs to a session of another user (never handed
    /// over, whatever the clean-start flag says).
    fn identity_refusal(&mut self, key: usize, c: &Connect<'_>, id: &str) -> Option<&'static str> {
        let link = self.links.get(key)?;
        let user = link.username.as_deref();
        if let (Some(w), Some(acl)) = (&c.will, self.auth.acl(link.listener)) {
            let client = crate::auth::Client {
                username: user,
                client_id: id,
            };
            if !acl.can_publish(client, w.topic) {
                return Some("Will topic not authorized");
            }
        }
        if self.auth.enforcing() {
            let owner = self.sessions.find(id).and_then(|s| self.sessions.get(s));
            if owner.is_some_and(|s| s.username.as_deref() != user) {
                return Some("client id in use by another user");
            }
        }
        None
    }

    /// Find the session for `id` (disconnecting a connection that holds it) or make one.
    /// Returns the session key and whether an existing session was resumed.
    fn take_over_or_create(
        &mut self,
        id: &str,
        clean: bool,
        expiry_s: u32,
        now_ms: u64,
    ) -> (usize, bool) {
        if let Some(s) = self.settled_session(id, now_ms) {
            if let Some(old) = self.sessions.get_mut(s).and_then(|x| x.link.take()) {
                if let Some(l) = self.links.get_mut(old) {
                    l.session = None;
                }
                if crate::log_sink::connection_messages() {
                    // Mosquitto's words, and its level (error, so the default log shows it).
                    log_at!(
                        Level::Error,
                        "Client {id} already connected, closing old connection."
                    );
                }
                self.close(
                    old,
                    Some(ReasonCode::SessionTakenOver),
                    "session taken over",
                );
                self.will_at_takeover(old, now_ms);
            }
            self.cancel_session_timers(s);
            if !clean {
                if let Some(sess) = self.sessions.get_mut(s) {
                    sess.expiry_s = expiry_s;
                }
                return (s, true);
            }
            self.end_session_reconnected(s);
        }
        (self.sessions.create(id, expiry_s), false)
    }

    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        key: usize,
        s: usize,
        c: &Connect<'_>,
        keep_alive: u16,
        will: Option<Box<StoredWill>>,
        id: &str,
        now_ms: u64,
    ) {
        if let Some(sess) = self.sessions.get_mut(s) {
            sess.link = Some(key);
            sess.client_receive_max = c.properties.receive_maximum.unwrap_or(u16::MAX);
            // A Will still waiting out its delay is cancelled by the reconnect [MQTT-3.1.3-9].
            sess.will = None;
        }
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if let Some(sess) = self.sessions.get_mut(s) {
            sess.username.clone_from(&link.username);
            sess.listener = link.listener;
        }
        link.state = LinkState::Connected;
        link.session = Some(s);
        link.client_id = Some(id.into());
        link.will = will;
        link.keepalive_ms = u64::from(keep_alive) * 1500;
        link.client_max_packet = c
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize);
        link.problem_info = c.properties.request_problem_information != Some(0);
        link.aliases_out_max = c.properties.topic_alias_maximum.unwrap_or(0);
        let gen = link.gen;
        if let Some(t) = link.timer.take() {
            self.timers.cancel(t);
        }
        if link.keepalive_ms > 0 {
            let t = self
                .timers
                .insert(now_ms + link.keepalive_ms, timer_key(TIMER_LINK, gen, key));
            if let Some(link) = self.links.get_mut(key) {
                link.timer = Some(t);
            }
        }
    }

    /// CONNACK accepting the connection, with the 5.0 properties we advertise.
    fn send_connack_ok(
        &mut self,
        key: usize,
        present: bool,
        assigned: Option<&str>,
        ka: Option<u16>,
        response: Option<&str>,
    ) {
        let mut props = Properties {
            assigned_client_identifier: assigned,
            server_keep_alive: ka,
            response_information: response,
            ..Properties::default()
        };
        if self.cfg.max_topic_alias > 0 {
            props.topic_alias_maximum = Some(self.cfg.max_topic_alias);
        }
        if self.cfg.receive_maximum != u16::MAX {
            props.receive_maximum = Some(self.cfg.receive_maximum);
        }
        if self.cfg.max_packet_size <= protocol::REMAINING_LENGTH_MAX {
            props.maximum_packet_size = u32::try_from(self.cfg.max_packet_size).ok();
        }
        let auth_final = self.links.get_mut(key).and_then(|l| l.auth_final.take());
        if let Some(data) = auth_final.as_deref() {
            props.authentication_method = Some(crate::auth::SCRAM_SHA_256);
            props.authentication_data = Some(data);
        }
        self.send_connack(key, present, ReasonCode::Success, Some(props));
    }

    pub(super) fn send_connack(
        &mut self,
        key: usize,
        present: bool,
        reason: ReasonCode,
        props: Option<Properties<'_>>,
    ) {
        if reason != ReasonCode::Success {
            self.fx.stats.connections_refused[super::refuse_reason(reason) as usize] += 1;
        }
        let ack = protocol::ConnAck {
            session_present: present,
            reason,
            properties: props.unwrap_or_default(),
        };
        self.send(key, &Packet::ConnAck(ack));
    }

    /// On resumption, resend every unacknowledged delivery: PUBLISH with DUP, or PUBREL.
    fn resend_inflight(&mut self, s: usize, now_ms: u64) {
        let Some(sess) = self.sessions.get(s) else {
            return;
        };
        let Some(key) = sess.link else { return };
        // Held deliveries are sent when released, not here.
        let flights: Vec<_> = sess
            .inflight()
            .iter()
            .filter(|f| f.held.is_none())
            .cloned()
            .collect();
        for f in flights {
            match f.state {
                FlightState::AwaitComp => {
                    self.send(key, &Packet::PubRel(protocol::Ack::new(f.pid)));
                }
                _ => {
                    let (_, sessions, mut sink) = self.parts();
                    if !deliver::write_publish(&mut sink, key, &f.out, Some(f.pid), true, now_ms) {
                        // Over the client's Maximum Packet Size: dropped, and logged done
                        // as every other dropped delivery is, or a restart would bring it
                        // back.
                        if let Some(sess) = sessions.get_mut(s) {
                            sess.drop_pid(f.pid);
                            deliver::log_done(sink.journal.as_deref_mut(), sess, f.pid);
                        }
                    }
                }
            }
        }
    }
}

/// The default `max_keepalive`, which also stands for "not configured".
const KEEPALIVE_MAX_DEFAULT_S: u16 = 65_535;

/// Mosquitto 2's rule: Keep Alive 0 (none) exceeds every limit but `max_keepalive 0`
/// (which means no limit). A 5.0 client is told the limit as its Server Keep Alive; a 3.x
/// client that asks for more than a configured limit, or for none under one, is refused.
/// Unlike Mosquitto, a 3.x client with Keep Alive 0 is accepted under the *default*
/// limit (Mosquitto 2.0.12 refusing it broke many small clients), and still closed after
/// 1.5 × 65,535 s of silence, so no idle connection lives forever.
fn granted_keepalive(version: Version, asked_s: u16, max_s: u16) -> u16 {
    let over = max_s != 0 && (asked_s == 0 || asked_s > max_s);
    match (version, over) {
        (_, false) => asked_s,
        (Version::V5, true) => max_s,
        (_, true) if asked_s == 0 => KEEPALIVE_MAX_DEFAULT_S,
        (_, true) => asked_s,
    }
}

/// Whether a 3.x CONNECT's Keep Alive is refused under `max_keepalive` (see
/// [`granted_keepalive`]).
fn keepalive_refused_v3(asked_s: u16, max_s: u16) -> bool {
    match (asked_s, max_s) {
        (_, 0) => false,
        (0, KEEPALIVE_MAX_DEFAULT_S) => false,
        (0, _) => true,
        (a, m) => a > m,
    }
}

#[cfg(test)]
mod keepalive_tests {
    use super::*;

    #[test]
    fn keepalive_zero_follows_max_keepalive() {
        let v3 = Version::V3_1_1;
        assert_eq!(granted_keepalive(Version::V5, 0, 60), 60);
        assert_eq!(granted_keepalive(Version::V5, 0, 0), 0);
        assert_eq!(granted_keepalive(Version::V5, 0, 65_535), 65_535);
        assert_eq!(granted_keepalive(Version::V5, 30, 60), 30);
        assert_eq!(granted_keepalive(v3, 0, 65_535), 65_535);
        assert_eq!(granted_keepalive(v3, 0, 0), 0);
        assert!(keepalive_refused_v3(0, 60));
        assert!(keepalive_refused_v3(61, 60));
        assert!(!keepalive_refused_v3(0, 65_535));
        assert!(!keepalive_refused_v3(0, 0));
        assert!(!keepalive_refused_v3(60, 60));
    }
}
