//! CONNECT against the password file: anonymous clients, usernames, the asynchronous
//! password check and the delayed refusal.
//!
//! Owns: the login decision for a CONNECT without an Authentication Method, the
//! [`PendingConnect`] of a link while its password is checked, the per-address failure
//! throttle and the per-shard cache of successful checks. Invariants: a password is never
//! hashed on the shard loop (a [`VerifyRequest`] goes out through `Effects`, the answer
//! comes back through [`Broker::on_verified`]); a link with a pending CONNECT reads no
//! further input; an answer for a link that has gone (or a reused key) is dropped; a
//! refusal is logged once, with client id, user and address, never the password.
//! Must not touch: the verifier threads (the shard owns them), the hashing itself.

use std::sync::Arc;

use super::access::AuthState;
use super::connect::{timer_key, TIMER_LINK};
use super::effects::VerifyRequest;
use super::link::PendingConnect;
use super::{Broker, LinkState, Verdict};
use crate::auth::Verdict as Check;
use crate::protocol::{self, Connect, Packet, ReasonCode, Version};

/// Verifier answers taken per shard turn (the rest wait for the next turn).
pub const VERIFY_ANSWERS_PER_TURN_MAX: usize = 256;

/// Why a login is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Wrong password or unknown user: 0x86 (5.0) / 0x05 (3.x, as Mosquitto answers).
    BadCredentials,
    /// Not allowed (anonymous, Will topic, client id of another user): 0x87 / 0x05.
    NotAuthorized,
    /// The verifier is saturated: 0x89 / 0x03.
    Busy,
}

fn refusal_code(r: Refusal, v: Version) -> ReasonCode {
    match (r, v) {
        (Refusal::BadCredentials, Version::V5) => ReasonCode::BadUserNameOrPassword,
        (Refusal::NotAuthorized | Refusal::BadCredentials, _) => ReasonCode::NotAuthorized,
        (Refusal::Busy, Version::V5) => ReasonCode::ServerBusy,
        (Refusal::Busy, _) => ReasonCode::ServerUnavailable,
    }
}

impl<X> Broker<X> {
    /// The security settings in force (one version per turn).
    pub fn auth(&self) -> &Arc<AuthState> {
        &self.auth
    }

    /// Put new security settings in force (SIGHUP), between turns. Connected clients stay
    /// connected; every decision from now on is made against `auth` (the caches see new
    /// generations and miss), including deliveries to existing subscriptions.
    pub fn set_auth(&mut self, auth: Arc<AuthState>) {
        self.auth = auth;
    }

    /// Link `key` was accepted on the listener with id `listener`
    /// (`config::listener::Listener::id`, stable across reloads): its security settings
    /// apply.
    pub fn set_listener(&mut self, key: usize, listener: usize) {
        if let Some(link) = self.links.get_mut(key) {
            link.listener = listener;
        }
    }

    /// True while link `key` waits for its password check: do not read it.
    pub fn input_paused(&self, key: usize) -> bool {
        self.links
            .get(key)
            .is_some_and(|l| l.pending_connect.is_some())
    }

    /// Decide a CONNECT without an Authentication Method: anonymous, username without a
    /// password file (Mosquitto: `allow_anonymous` decides), or a password to check.
    pub(super) fn login(&mut self, key: usize, c: &Connect<'_>, now_ms: u64) -> Verdict {
        let Some(link) = self.links.get(key) else {
            return Verdict::Close;
        };
        let (listener, gen) = (link.listener, link.gen);
        if link.username.is_some() {
            // The TLS certificate named the user (`use_identity_as_username`).
            return self.complete_connect(key, c, now_ms);
        }
        let allow_anonymous = self.auth.allow_anonymous(listener);
        let Some(user) = c.username else {
            if allow_anonymous {
                return self.complete_connect(key, c, now_ms);
            }
            return self.refuse_login(key, c, Refusal::NotAuthorized, "anonymous client");
        };
        let Some(file) = self.auth.password_file(listener).cloned() else {
            if !allow_anonymous {
                return self.refuse_login(key, c, Refusal::NotAuthorized, "no password file");
            }
            if let Some(link) = self.links.get_mut(key) {
                link.username = Some(user.into());
            }
            return self.complete_connect(key, c, now_ms);
        };
        let password = c.password.unwrap_or_default();
        let cached = self
            .verify_cache
            .as_ref()
            .is_some_and(|vc| vc.hit(file.generation(), user, password));
        if cached {
            if let Some(link) = self.links.get_mut(key) {
                link.username = Some(user.into());
            }
            return self.complete_connect(key, c, now_ms);
        }
        let mut connect = Vec::new();
        protocol::encode(&Packet::Connect(c.clone()), c.version, &mut connect);
        if let Some(link) = self.links.get_mut(key) {
            link.pending_connect = Some(Box::new(PendingConnect {
                connect,
                refusal: None,
                claim: false,
                handover: false,
            }));
        }
        self.fx.verify.push(VerifyRequest {
            token: ((key as u64) << 32) | u64::from(gen),
            file,
            user: user.to_string(),
            password: password.to_vec(),
        });
        Verdict::Continue
    }

    /// The answer to a [`VerifyRequest`]: `Some((verdict, generation of the file checked))`,
    /// or `None` when the verifier was too busy to take it.
    pub fn on_verified(&mut self, token: u64, answer: Option<(Check, u64)>, now_ms: u64) {
        let Some((key, version, pending)) =
            self.take_pending_connect(token, |p| p.refusal.is_none() && !p.claim)
        else {
            return;
        };
        let Some(c) = self.stored_connect(key, &pending.connect, version) else {
            return;
        };
        match answer {
            None => {
                self.refuse_login(key, &c, Refusal::Busy, "password checks saturated");
            }
            Some((Check::Ok, generation)) => {
                self.passed_login(key, token, &c, &pending.connect, generation, now_ms);
            }
            Some((_, _)) => self.failed_login(key, &c, now_ms),
        }
    }

    /// Take the [`PendingConnect`] of the link an asynchronous answer (`token`: key and
    /// generation) is for, when that link is still the same connection, still before its
    /// CONNACK, and `waits` says its CONNECT waits for this kind of answer. `None` drops a
    /// late answer. Returns the link's key and protocol version with it.
    pub(super) fn take_pending_connect(
        &mut self,
        token: u64,
        waits: impl Fn(&PendingConnect) -> bool,
    ) -> Option<(usize, Version, Box<PendingConnect>)> {
        let key = (token >> 32) as usize;
        let link = self.links.get_mut(key)?;
        let waiting = link.pending_connect.as_deref().is_some_and(waits);
        if link.gen != token as u32 || link.state != LinkState::ExpectConnect || !waiting {
            return None;
        }
        let pending = link.pending_connect.take()?;
        Some((key, link.version, pending))
    }

    /// A held CONNECT (re-encoded by us) decoded again; the link is closed if it cannot be.
    pub(super) fn stored_connect<'a>(
        &mut self,
        key: usize,
        bytes: &'a [u8],
        version: Version,
    ) -> Option<Connect<'a>> {
        match protocol::decode(bytes, version, usize::MAX) {
            Ok(protocol::Decoded::Packet {
                packet: Packet::Connect(c),
                ..
            }) => Some(c),
            _ => {
                self.close(key, None, "stored CONNECT unreadable");
                None
            }
        }
    }

    /// The password was right for the file of generation `generation`: connect, unless
    /// the file was reloaded meanwhile (then check again against the new one).
    fn passed_login(
        &mut self,
        key: usize,
        token: u64,
        c: &Connect<'_>,
        connect: &[u8],
        generation: u64,
        now_ms: u64,
    ) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let (listener, peer) = (link.listener, link.peer);
        let user = c.username.unwrap_or_default();
        let password = c.password.unwrap_or_default();
        match self.auth.password_file(listener).cloned() {
            Some(f) if f.generation() != generation => {
                link.pending_connect = Some(Box::new(PendingConnect {
                    connect: connect.to_vec(),
                    refusal: None,
                    claim: false,
                    handover: false,
                }));
                self.fx.verify.push(VerifyRequest {
                    token,
                    file: f,
                    user: user.to_string(),
                    password: password.to_vec(),
                });
                return;
            }
            None => {
                self.refuse_login(key, c, Refusal::NotAuthorized, "no password file");
                return;
            }
            Some(_) => {}
        }
        if let Some(vc) = self.verify_cache.as_mut() {
            vc.insert(generation, user, password);
        }
        self.throttle.on_success(peer.ip());
        link.username = Some(user.into());
        self.complete_connect(key, c, now_ms);
    }

    /// A wrong password or unknown user: count it for the address and refuse after the
    /// throttle's delay (the link stays paused until then).
    fn failed_login(&mut self, key: usize, c: &Connect<'_>, now_ms: u64) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let delay = self.throttle.on_failure(link.peer.ip(), now_ms);
        if delay == 0 {
            self.refuse_login(key, c, Refusal::BadCredentials, "bad username or password");
            return;
        }
        self.fx.stats.auth_failures += 1;
        log_refusal(
            link.client_id.as_deref(),
            c.username,
            link.peer,
            "bad username or password",
        );
        link.pending_connect = Some(Box::new(PendingConnect {
            connect: Vec::new(),
            refusal: Some(refusal_code(Refusal::BadCredentials, c.version)),
            claim: false,
            handover: false,
        }));
        let gen = link.gen;
        let old = link.timer.take();
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        let t = self
            .timers
            .insert(now_ms + delay, timer_key(TIMER_LINK, gen, key));
        if let Some(link) = self.links.get_mut(key) {
            link.timer = Some(t);
        }
    }

    /// The link timer of a link whose refusal was delayed: send it now. Returns false when
    /// the link has no refusal due (an ordinary CONNECT deadline).
    pub(super) fn delayed_refusal(&mut self, key: usize) -> bool {
        let Some(link) = self.links.get_mut(key) else {
            return false;
        };
        let Some(reason) = link.pending_connect.as_ref().and_then(|p| p.refusal) else {
            return false;
        };
        link.pending_connect = None;
        self.send_connack(key, false, reason, None);
        self.close(key, None, "bad username or password");
        true
    }

    /// Refuse a login: CONNACK with the version's code, log once, close.
    pub(super) fn refuse_login(
        &mut self,
        key: usize,
        c: &Connect<'_>,
        why: Refusal,
        detail: &str,
    ) -> Verdict {
        if why != Refusal::Busy {
            self.fx.stats.auth_failures += 1;
        }
        if let Some(link) = self.links.get_mut(key) {
            link.pending_connect = None;
            log_refusal(link.client_id.as_deref(), c.username, link.peer, detail);
        }
        self.refuse(key, refusal_code(why, c.version), detail)
    }
}

/// One line per refused login: client id, user and address; never the password.
pub(super) fn log_refusal(
    client_id: Option<&str>,
    user: Option<&str>,
    peer: std::net::SocketAddr,
    why: &str,
) {
    crate::log_at!(
        crate::log::Level::Notice,
        "Client {} (user {}) from {peer} refused: {why}.",
        client_id.unwrap_or("<unknown>").escape_debug(),
        user.unwrap_or("<anonymous>").escape_debug(),
    );
}
