//! The RFC 5802 §7 message grammar shared by the server and client sides.
//!
//! Owns: size and UTF-8 checks, `attr=value` splitting, saslname escaping, nonce and
//! base64 field checks. Each function either returns a validated borrowed view of its input
//! or a `ScramError::Malformed` naming what was wrong.
//! Must not touch: keys, credentials, state.

use super::ScramError;
use crate::auth::keys::{self, Key};
use crate::auth::{NONCE_BYTES_MAX, SCRAM_MESSAGE_BYTES_MAX, USERNAME_BYTES_MAX};

/// Shorthand for a malformed-message error.
pub(super) fn malformed<T>(what: &'static str) -> Result<T, ScramError> {
    Err(ScramError::Malformed(what))
}

/// Checks a whole message's size, then that it is UTF-8 (RFC 5802 messages are UTF-8).
pub(super) fn message_text(message: &[u8]) -> Result<&str, ScramError> {
    if message.is_empty() {
        return malformed("empty message");
    }
    if message.len() > SCRAM_MESSAGE_BYTES_MAX {
        return malformed("message longer than 4096 bytes");
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("message is not UTF-8"))
}

/// Iterates the comma-separated `a=value` attributes of a message.
pub(super) struct Attrs<'a> {
    pieces: std::str::Split<'a, char>,
}

impl<'a> Attrs<'a> {
    /// Starts iterating `text`.
    pub(super) fn new(text: &'a str) -> Attrs<'a> {
        Attrs {
            pieces: text.split(','),
        }
    }

    /// The next attribute as `(name, value)`, `None` at the end. A piece that is not
    /// `ALPHA "=" 1*value-char` is malformed.
    pub(super) fn next_attr(&mut self) -> Result<Option<(u8, &'a str)>, ScramError> {
        let Some(piece) = self.pieces.next() else {
            return Ok(None);
        };
        let bytes = piece.as_bytes();
        if bytes.len() < 3 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b'=' {
            return malformed("attribute is not of the form a=value");
        }
        Ok(Some((bytes[0], &piece[2..])))
    }

    /// The next attribute, which must be named `name`; `what` describes it for the error.
    pub(super) fn expect(&mut self, name: u8, what: &'static str) -> Result<&'a str, ScramError> {
        match self.next_attr()? {
            Some((n, value)) if n == name => Ok(value),
            _ => malformed(what),
        }
    }

    /// Validates that whatever remains is well-formed optional extensions, which RFC 5802
    /// lets a receiver ignore. A mandatory extension (`m=`) is only legal first, so here it
    /// is just another attribute.
    pub(super) fn finish_extensions(mut self) -> Result<(), ScramError> {
        // The message size cap bounds this loop.
        while self.next_attr()?.is_some() {}
        Ok(())
    }
}

/// Decodes a saslname: `=2C` → `,`, `=3D` → `=`, any other `=` is malformed; NUL is not
/// allowed. No SASLprep: the name is compared byte-wise (see the decision record).
pub(super) fn decode_saslname(name: &str) -> Result<String, ScramError> {
    if name.is_empty() || name.len() > USERNAME_BYTES_MAX * 3 {
        return malformed("username empty or too long");
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(pos) = rest.find(['=', '\0']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return malformed("bad escape or NUL in username");
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    if out.len() > USERNAME_BYTES_MAX {
        return malformed("username longer than 256 bytes");
    }
    Ok(out)
}

/// Encodes a username as a saslname (`,` → `=2C`, `=` → `=3D`).
pub(super) fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Checks a nonce: 1 to [`NONCE_BYTES_MAX`] printable ASCII characters other than `,`.
pub(super) fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    let printable = |b: &u8| (0x21..=0x7e).contains(b) && *b != b',';
    if nonce.is_empty() || nonce.len() > NONCE_BYTES_MAX || !nonce.bytes().all(|b| printable(&b)) {
        return malformed("nonce empty, too long or not printable");
    }
    Ok(())
}

/// Decodes a base64 field that must hold exactly one key (a proof or a signature).
pub(super) fn key_field(text: &str, what: &'static str) -> Result<Key, ScramError> {
    keys::unb64_key(text).ok_or(ScramError::Malformed(what))
}

/// Parses a decimal iteration count (digits only) and checks it is within `range`.
pub(super) fn iteration_count(
    text: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ScramError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return malformed("iteration count is not a number");
    }
    match text.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => malformed("iteration count out of range"),
    }
}
