//! SCRAM-SHA-256 key arithmetic (RFC 5802 §3) and the few encodings around it.
//!
//! Owns: `Hi` (PBKDF2-HMAC-SHA-256), the ClientKey / StoredKey / ServerKey derivations,
//! proof XOR, base64 and randomness. Everything here is a pure function of its arguments
//! except `random_bytes`.
//! Invariant: every key is exactly [`KEY_BYTES`] long, by type.
//! Must not touch: message grammar, credential storage, packets.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of a SHA-256 output, hence of every SCRAM-SHA-256 key, signature and proof.
pub(crate) const KEY_BYTES: usize = 32;

/// A SCRAM-SHA-256 key, signature or proof.
pub(crate) type Key = [u8; KEY_BYTES];

type HmacSha256 = Hmac<Sha256>;

/// `HMAC(key, parts[0] || parts[1] || ...)` with SHA-256.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC accepts keys of any length (long keys are hashed), so this never fails;
    // the `expect` states an invariant of the algorithm, not of any input.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `H(data)` with SHA-256.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// `SaltedPassword := Hi(password, salt, iterations)`; `Hi` is PBKDF2 with HMAC-SHA-256.
///
/// The password is used as its UTF-8 bytes, without SASLprep (see the decision record).
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(salted: &Key) -> Key {
    hmac(salted, &[b"Client Key"])
}

/// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn server_key(salted: &Key) -> Key {
    hmac(salted, &[b"Server Key"])
}

/// `(StoredKey, ServerKey)` for a password: what the server keeps instead of it.
pub(crate) fn stored_and_server_key(password: &[u8], salt: &[u8], iterations: u32) -> (Key, Key) {
    let salted = salted_password(password, salt, iterations);
    (sha256(&client_key(&salted)), server_key(&salted))
}

/// Byte-wise XOR; `ClientProof := ClientKey XOR ClientSignature` and its inverse.
pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_BYTES];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4), as RFC 5802 requires.
pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard padded base64; `None` for anything else (including non-canonical
/// trailing bits), so one value has one spelling.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes base64 that must hold exactly one key.
pub(crate) fn unb64_key(text: &str) -> Option<Key> {
    // A key is 44 base64 characters; refuse longer input before allocating for it.
    if text.len() != 44 {
        return None;
    }
    unb64(text)?.try_into().ok()
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            b64(&mac),
            b64(&[
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43,
            ])
        );
    }

    #[test]
    fn unb64_key_wants_exactly_32_bytes() {
        let key = [7u8; KEY_BYTES];
        assert_eq!(unb64_key(&b64(&key)), Some(key));
        assert_eq!(unb64_key(&b64(&[7u8; 31])), None);
        assert_eq!(unb64_key(&b64(&[7u8; 33])), None);
        assert_eq!(
            unb64_key("not base64 at all, but 44 characters long!!"),
            None
        );
    }

    #[test]
    fn xor_is_its_own_inverse() {
        let a = [0x5au8; KEY_BYTES];
        let b = sha256(b"x");
        assert_eq!(xor(&xor(&a, &b), &b), a);
    }
}
