//! The client side of SCRAM-SHA-256, for tests and the load generator.
//!
//! Owns: one client exchange: the client-first-message, the proof, and the expected server
//! signature. Invariant: the password is dropped once the proof is computed, and a server
//! is accepted only if it proves knowledge of the ServerKey.
//! Must not touch: packets, sockets.

use subtle::ConstantTimeEq;

use super::grammar::{self, malformed, Attrs};
use super::ScramError;
use crate::auth::keys::{self, Key};
use crate::auth::{
    ITERATIONS_MAX, ITERATIONS_MIN, PASSWORD_BYTES_MAX, SALT_BYTES_MAX, SERVER_ERROR_BYTES_MAX,
    SERVER_NONCE_RANDOM_BYTES, USERNAME_BYTES_MAX,
};

/// A client exchange. Call [`ScramClient::new`], send the client-first-message, pass the
/// server-first-message to [`ScramClient::handle_server_first`], send the
/// client-final-message it returns, then check the server-final-message with
/// [`ScramClient::verify_server_final`].
pub struct ScramClient {
    /// Cleared once the proof is computed.
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// The ServerSignature to expect, known once the server-first-message is handled.
    server_signature: Option<Key>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange for `user` and returns it with the client-first-message
    /// (`n,,n=<user>,r=<nonce>`), the Authentication Data of CONNECT or AUTH 0x19.
    ///
    /// The username must be 1 to 256 bytes without NUL; the password at most 1024 bytes.
    pub fn new(user: &str, password: &str) -> Result<(ScramClient, Vec<u8>), ScramError> {
        let random = keys::random_bytes::<SERVER_NONCE_RANDOM_BYTES>()
            .map_err(|_| ScramError::RandomUnavailable)?;
        Self::with_nonce(user, password, &keys::b64(&random))
    }

    /// [`ScramClient::new`] with a given client nonce.
    pub(super) fn with_nonce(
        user: &str,
        password: &str,
        nonce: &str,
    ) -> Result<(ScramClient, Vec<u8>), ScramError> {
        if user.is_empty() || user.len() > USERNAME_BYTES_MAX || user.contains('\0') {
            return malformed("username empty, too long or containing NUL");
        }
        if password.len() > PASSWORD_BYTES_MAX {
            return malformed("password longer than 1024 bytes");
        }
        grammar::check_nonce(nonce)?;
        let bare = format!("n={},r={}", grammar::encode_saslname(user), nonce);
        let first = format!("n,,{bare}").into_bytes();
        let client = ScramClient {
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare: bare,
            server_signature: None,
        };
        Ok((client, first))
    }

    /// Takes the server-first-message (AUTH 0x18) and returns the client-final-message
    /// to send (AUTH 0x18). Runs PBKDF2, so it costs `i` HMAC rounds. Refuses iteration
    /// counts outside 4096..=10,000,000 and a server nonce that does not extend ours.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if self.server_signature.is_some() {
            return malformed("server-first-message already handled");
        }
        let text = grammar::message_text(server_first)?;
        let (nonce, salt, iterations) = self.parse_server_first(text)?;
        let salted = keys::salted_password(self.password.as_bytes(), &salt, iterations);
        self.password.clear();
        let client_key = keys::client_key(&salted);
        let stored_key = keys::sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            text.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let proof = keys::xor(&client_key, &keys::hmac(&stored_key, &auth_message));
        self.server_signature = Some(keys::hmac(&keys::server_key(&salted), &auth_message));
        Ok(format!("{without_proof},p={}", keys::b64(&proof)).into_bytes())
    }

    /// Parses `r=nonce,s=salt,i=count[,extensions]`.
    fn parse_server_first<'a>(&self, text: &'a str) -> Result<(&'a str, Vec<u8>, u32), ScramError> {
        let mut attrs = Attrs::new(text);
        let nonce = match attrs.next_attr()? {
            Some((b'm', _)) => return Err(ScramError::MandatoryExtensionUnsupported),
            Some((b'r', nonce)) => nonce,
            _ => return malformed("expected r=nonce"),
        };
        grammar::check_nonce(nonce)?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return malformed("server nonce does not extend the client nonce");
        }
        let salt = attrs.expect(b's', "expected s=salt")?;
        let salt = match keys::unb64(salt) {
            Some(s) if !s.is_empty() && s.len() <= SALT_BYTES_MAX => s,
            _ => return malformed("salt is not 1 to 64 bytes of base64"),
        };
        let count = attrs.expect(b'i', "expected i=iteration-count")?;
        let iterations = grammar::iteration_count(count, ITERATIONS_MIN..=ITERATIONS_MAX)?;
        attrs.finish_extensions()?;
        Ok((nonce, salt, iterations))
    }

    /// Checks the server-final-message (CONNACK 0x00 or AUTH 0x00 Authentication Data):
    /// `v=` must carry the expected ServerSignature; `e=` is reported as
    /// [`ScramError::ServerRejected`].
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let Some(expected) = self.server_signature else {
            return malformed("no server-first-message handled yet");
        };
        let mut attrs = Attrs::new(grammar::message_text(server_final)?);
        match attrs.next_attr()? {
            Some((b'e', error)) => Err(ScramError::ServerRejected(cut(error).to_owned())),
            Some((b'v', signature)) => {
                let signature = grammar::key_field(signature, "verifier is not 32 bytes")?;
                attrs.finish_extensions()?;
                if bool::from(signature.ct_eq(&expected)) {
                    Ok(())
                } else {
                    Err(ScramError::BadServerSignature)
                }
            }
            _ => malformed("expected v=verifier or e=error"),
        }
    }
}

/// `text` cut to at most [`SERVER_ERROR_BYTES_MAX`] bytes on a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(SERVER_ERROR_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
