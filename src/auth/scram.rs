//! The SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), server side, as bytes in and bytes out.
//!
//! Owns: one exchange in progress ([`ScramServer`], which awaits the client-final-message)
//! and the errors of both sides. [`ScramClient`] is the matching client for tests and the
//! load generator.
//!
//! Invariants:
//! - An unknown user is answered with a decoy server-first-message (salt and iteration count
//!   derived from the name and a per-process secret, see `credentials`) and fails at
//!   [`ScramServer::finish`] with [`ScramError::UnknownUserOrBadProof`], the same error, on
//!   the same code path, as a wrong password.
//! - The proof is compared in constant time; every input is size-capped before parsing
//!   and no input can panic.
//! - Only `n` and `y` GS2 channel-binding flags are accepted; `p=` is refused.
//!
//! Must not touch: packets, reason codes, sockets, clocks. The caller maps
//! [`ScramError::is_bad_credentials`] to a reason code.

mod client;
mod grammar;
#[cfg(test)]
mod tests;

pub use client::ScramClient;

use subtle::{Choice, ConstantTimeEq};

use crate::auth::credentials::ScramCredentials;
use crate::auth::keys::{self, Key};
use crate::auth::SERVER_NONCE_RANDOM_BYTES;
use grammar::{malformed, Attrs};

/// Why a SCRAM exchange failed. Only [`ScramError::UnknownUserOrBadProof`] means "wrong
/// credentials"; every other variant is a protocol or environment problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The message breaks the RFC 5802 grammar or a size limit; the text says what.
    Malformed(&'static str),
    /// The client asked for channel binding (`p=` GS2 flag), which is not offered.
    ChannelBindingUnsupported,
    /// A mandatory extension (`m=`) was present; none is supported (RFC 5802 §5.1).
    MandatoryExtensionUnsupported,
    /// Unknown user or wrong password: deliberately one variant, so the two can't be told apart.
    UnknownUserOrBadProof,
    /// Client side: the server's signature did not verify, so it does not know the password.
    BadServerSignature,
    /// Client side: the server-final-message was `e=<value>` (value cut to 256 bytes).
    ServerRejected(String),
    /// The operating system's random source failed.
    RandomUnavailable,
}

impl ScramError {
    /// True when the failure is wrong credentials (MQTT reason 0x86, Bad user name or
    /// password); false for protocol, grammar or environment problems.
    pub fn is_bad_credentials(&self) -> bool {
        matches!(self, ScramError::UnknownUserOrBadProof)
    }
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramError::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            ScramError::ChannelBindingUnsupported => f.write_str("channel binding not supported"),
            ScramError::MandatoryExtensionUnsupported => {
                f.write_str("mandatory SCRAM extension not supported")
            }
            ScramError::UnknownUserOrBadProof => f.write_str("unknown user or bad proof"),
            ScramError::BadServerSignature => f.write_str("server signature did not verify"),
            ScramError::ServerRejected(e) => write!(f, "server rejected authentication: {e}"),
            ScramError::RandomUnavailable => f.write_str("random source unavailable"),
        }
    }
}

impl std::error::Error for ScramError {}

/// One server-side exchange that has sent its server-first-message and awaits the
/// client-final-message. Consumed by [`ScramServer::finish`], so it can't be finished twice.
pub struct ScramServer {
    /// The name the client claimed, unescaped; returned on success.
    username: String,
    /// False for a decoy exchange (unknown user): finish then always fails.
    known: bool,
    stored_key: Key,
    server_key: Key,
    /// The GS2 header exactly as received (`n,,` or `y,,`); `c=` must echo it.
    gs2_header: String,
    /// Client nonce followed by server nonce; `r=` must repeat it.
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and the known/decoy flag stay out of logs.
        f.debug_struct("ScramServer")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The parts of a client-first-message the server keeps.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    bare: &'a str,
    username: String,
    nonce: &'a str,
}

impl ScramServer {
    /// Takes the client-first-message (MQTT: Authentication Data of CONNECT, or of AUTH
    /// 0x19) and returns the exchange state and the server-first-message to send (AUTH 0x18).
    ///
    /// An unknown user gets a decoy answer indistinguishable from a real one and fails
    /// only at [`ScramServer::finish`].
    pub fn start(
        creds: &ScramCredentials,
        client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let random = keys::random_bytes::<SERVER_NONCE_RANDOM_BYTES>()
            .map_err(|_| ScramError::RandomUnavailable)?;
        Self::start_with_nonce(creds, client_first, &keys::b64(&random))
    }

    /// [`ScramServer::start`] with a given server nonce (must already be a valid nonce).
    fn start_with_nonce(
        creds: &ScramCredentials,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let first = parse_client_first(grammar::message_text(client_first)?)?;
        let (entry, known) = creds
            .entry_or_decoy(&first.username)
            .ok_or(ScramError::RandomUnavailable)?;
        let nonce = format!("{}{}", first.nonce, server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            keys::b64(entry.salt()),
            entry.iterations()
        );
        let state = ScramServer {
            username: first.username,
            known,
            stored_key: *entry.stored_key(),
            server_key: *entry.server_key(),
            gs2_header: first.gs2_header.to_owned(),
            nonce,
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
        };
        Ok((state, server_first.into_bytes()))
    }

    /// The username the client claimed (unescaped). Not yet authenticated.
    pub fn claimed_username(&self) -> &str {
        &self.username
    }

    /// Takes the client-final-message (AUTH 0x18) and returns the authenticated username
    /// and the server-final-message (`v=...`, for CONNACK 0x00 or AUTH 0x00).
    ///
    /// On failure no server-final-message is produced: MQTT reports the failure through
    /// the reason code, so RFC 5802's `e=` message is not needed.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let text = grammar::message_text(client_final)?;
        // The proof is last and its base64 holds no comma, so the last ",p=" starts it.
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return malformed("missing proof");
        };
        self.check_without_proof(without_proof)?;
        let proof = grammar::key_field(proof, "proof is not 32 bytes of base64")?;
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = keys::hmac(&self.stored_key, &auth_message);
        let client_key = keys::xor(&proof, &client_signature);
        let matches = keys::sha256(&client_key).ct_eq(&self.stored_key);
        if !bool::from(matches & Choice::from(u8::from(self.known))) {
            return Err(ScramError::UnknownUserOrBadProof);
        }
        let server_signature = keys::hmac(&self.server_key, &auth_message);
        let server_final = format!("v={}", keys::b64(&server_signature));
        Ok((self.username, server_final.into_bytes()))
    }

    /// Checks `c=` (echo of the GS2 header, no channel-binding data) and `r=` (the
    /// combined nonce), then that the rest is well-formed extensions.
    fn check_without_proof(&self, without_proof: &str) -> Result<(), ScramError> {
        let mut attrs = Attrs::new(without_proof);
        let binding = attrs.expect(b'c', "expected c=channel-binding")?;
        match keys::unb64(binding) {
            Some(b) if b == self.gs2_header.as_bytes() => {}
            _ => return malformed("channel binding does not echo the GS2 header"),
        }
        let nonce = attrs.expect(b'r', "expected r=nonce")?;
        if nonce != self.nonce {
            return malformed("nonce does not match");
        }
        attrs.finish_extensions()
    }
}

/// Splits `gs2-header client-first-message-bare` and parses the bare part.
fn parse_client_first(text: &str) -> Result<ClientFirst<'_>, ScramError> {
    let Some((flag, rest)) = text.split_once(',') else {
        return malformed("missing GS2 header");
    };
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
        _ => return malformed("bad GS2 channel-binding flag"),
    }
    let Some((authzid, bare)) = rest.split_once(',') else {
        return malformed("missing GS2 header");
    };
    let gs2_header = &text[..flag.len() + authzid.len() + 2];
    let mut attrs = Attrs::new(bare);
    let username = match attrs.next_attr()? {
        Some((b'm', _)) => return Err(ScramError::MandatoryExtensionUnsupported),
        Some((b'n', name)) => grammar::decode_saslname(name)?,
        _ => return malformed("expected n=username"),
    };
    let nonce = attrs.expect(b'r', "expected r=nonce")?;
    grammar::check_nonce(nonce)?;
    attrs.finish_extensions()?;
    check_authzid(authzid, &username)?;
    Ok(ClientFirst {
        gs2_header,
        bare,
        username,
        nonce,
    })
}

/// An authorization identity is accepted only when empty or equal to the username:
/// acting as another user is not supported.
fn check_authzid(authzid: &str, username: &str) -> Result<(), ScramError> {
    if authzid.is_empty() {
        return Ok(());
    }
    let Some(name) = authzid.strip_prefix("a=") else {
        return malformed("bad authzid");
    };
    if grammar::decode_saslname(name)? != username {
        return malformed("authzid differs from username");
    }
    Ok(())
}
