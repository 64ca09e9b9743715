//! Enhanced authentication (MQTT 5 §4.12): the AUTH exchange around `crate::auth`'s SCRAM.
//!
//! Owns: the packet side of SCRAM-SHA-256: CONNECT with an Authentication Method starts
//! it, AUTH (0x18) continues it, CONNACK carries the server's final message; a connected
//! client re-authenticates with AUTH (0x19) and ends with AUTH (0x00). Invariants: no
//! packet other than AUTH is accepted while the first exchange runs; a re-authentication
//! must prove the same user; any failure ends the connection with 0x86 (bad credentials)
//! or 0x8C (bad method). Must not touch: the cryptography, which lives in `crate::auth`.

use super::{Broker, LinkState, Verdict};
use crate::auth::{ScramServer, SCRAM_SHA_256};
use crate::protocol::{self, Auth, Connect, Packet, Properties, ReasonCode};

/// An exchange in progress on one link.
#[derive(Debug)]
pub struct AuthFlow {
    server: ScramServer,
    /// The CONNECT, re-encoded, to complete once the client has proved itself; empty for a
    /// re-authentication.
    connect: Vec<u8>,
}

impl<X> Broker<X> {
    /// CONNECT named an Authentication Method: start the exchange (or refuse it).
    pub(super) fn start_auth(&mut self, key: usize, c: &Connect<'_>) -> Verdict {
        let Some(creds) = self.cfg.scram_credentials.clone() else {
            return self.refuse(
                key,
                ReasonCode::BadAuthenticationMethod,
                "enhanced auth not configured",
            );
        };
        if c.properties.authentication_method != Some(SCRAM_SHA_256) {
            return self.refuse(
                key,
                ReasonCode::BadAuthenticationMethod,
                "unknown authentication method",
            );
        }
        let data = c.properties.authentication_data.unwrap_or_default();
        let (server, first) = match ScramServer::start(&creds, data) {
            Ok(x) => x,
            Err(e) => return self.refuse(key, auth_failure(&e), "SCRAM client-first refused"),
        };
        let mut connect = Vec::new();
        protocol::encode(&Packet::Connect(c.clone()), c.version, &mut connect);
        if let Some(link) = self.links.get_mut(key) {
            link.state = LinkState::AwaitAuth;
            link.auth = Some(Box::new(AuthFlow { server, connect }));
        }
        self.send_auth(key, ReasonCode::ContinueAuthentication, &first);
        Verdict::Continue
    }

    /// An AUTH packet: the client's final message, or the start of a re-authentication.
    pub(super) fn on_auth(&mut self, key: usize, a: &Auth<'_>, now_ms: u64) -> Verdict {
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        if a.properties.authentication_method != Some(SCRAM_SHA_256)
            || link.username.is_none() && link.state == LinkState::Connected
        {
            // [MQTT-4.12.0-5]: the method must stay the one the connection started with.
            return self.close(
                key,
                Some(ReasonCode::ProtocolError),
                "AUTH with another method",
            );
        }
        let data = a.properties.authentication_data.unwrap_or_default();
        match (a.reason, link.auth.take()) {
            (ReasonCode::ContinueAuthentication, Some(flow)) => {
                self.finish_auth(key, *flow, data, now_ms)
            }
            (ReasonCode::ReAuthenticate, None) if link.state == LinkState::Connected => {
                self.start_reauth(key, data)
            }
            _ => self.close(key, Some(ReasonCode::ProtocolError), "AUTH out of sequence"),
        }
    }

    fn start_reauth(&mut self, key: usize, data: &[u8]) -> Verdict {
        let Some(creds) = self.cfg.scram_credentials.clone() else {
            return Verdict::Close;
        };
        match ScramServer::start(&creds, data) {
            Ok((server, first)) => {
                if let Some(link) = self.links.get_mut(key) {
                    link.auth = Some(Box::new(AuthFlow {
                        server,
                        connect: Vec::new(),
                    }));
                }
                self.send_auth(key, ReasonCode::ContinueAuthentication, &first);
                Verdict::Continue
            }
            Err(e) => self.close(key, Some(auth_failure(&e)), "re-authentication refused"),
        }
    }

    fn finish_auth(&mut self, key: usize, flow: AuthFlow, data: &[u8], now_ms: u64) -> Verdict {
        let (user, last) = match flow.server.finish(data) {
            Ok(x) => x,
            Err(e) if flow.connect.is_empty() => {
                return self.close(key, Some(auth_failure(&e)), "re-authentication failed")
            }
            Err(e) => return self.refuse(key, auth_failure(&e), "SCRAM proof refused"),
        };
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        if flow.connect.is_empty() {
            if link.username.as_deref() != Some(user.as_str()) {
                return self.close(
                    key,
                    Some(ReasonCode::NotAuthorized),
                    "re-authenticated as another user",
                );
            }
            self.send_auth(key, ReasonCode::Success, &last);
            return Verdict::Continue;
        }
        link.username = Some(user.into());
        link.state = LinkState::ExpectConnect;
        link.auth_final = Some(last.into_boxed_slice());
        match protocol::decode(&flow.connect, protocol::Version::V5, usize::MAX) {
            Ok(protocol::Decoded::Packet {
                packet: Packet::Connect(c),
                ..
            }) => self.complete_connect(key, &c, now_ms),
            _ => self.close(key, None, "stored CONNECT unreadable"),
        }
    }

    fn send_auth(&mut self, key: usize, reason: ReasonCode, data: &[u8]) {
        let a = Auth {
            reason,
            properties: Properties {
                authentication_method: Some(SCRAM_SHA_256),
                authentication_data: Some(data),
                ..Properties::default()
            },
        };
        self.send(key, &Packet::Auth(a));
    }
}

/// 0x86 for a wrong password or unknown user, 0x8C for anything else wrong with the exchange.
fn auth_failure(e: &crate::auth::ScramError) -> ReasonCode {
    if e.is_bad_credentials() {
        ReasonCode::BadUserNameOrPassword
    } else {
        ReasonCode::BadAuthenticationMethod
    }
}
