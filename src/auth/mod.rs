//! Credential checking for MQTT 5 enhanced authentication.
//!
//! Owns: the one supported Authentication Method, [`SCRAM_SHA_256`] (RFC 5802 / RFC 7677),
//! as pure byte-in/byte-out state machines ([`ScramServer`], and [`ScramClient`] for tests
//! and the load generator), and the credentials file that feeds it ([`ScramCredentials`]).
//!
//! Invariants: the broker holds no plaintext password, only salt, iteration count, StoredKey
//! and ServerKey; an unknown user and a wrong password fail identically, at the final step;
//! every input is bounded by the `*_MAX` limits below and no input panics.
//!
//! Must not touch: packets, properties, reason codes, sockets, clocks, shards. The caller
//! carries Authentication Data in and out of CONNECT / AUTH / CONNACK and maps
//! [`ScramError::is_bad_credentials`] to 0x86 (Bad user name or password), anything else to
//! a protocol error; an unsupported method is the caller's 0x8C. Rationale and the file
//! format: `docs/decisions/0004-enhanced-auth.md`.
#![forbid(unsafe_code)]

pub mod credentials;
mod keys;
pub mod scram;

pub use credentials::{scram_entry, CredentialsError, ScramCredentials, ScramEntry};
pub use scram::{ScramClient, ScramError, ScramServer};

/// The Authentication Method name (MQTT 5 property 0x15) this module implements.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Largest SCRAM message accepted (client-first, server-first, client-final, server-final).
pub const SCRAM_MESSAGE_BYTES_MAX: usize = 4096;
/// Longest username, after unescaping, in messages and in the credentials file.
pub const USERNAME_BYTES_MAX: usize = 256;
/// Longest password the client helper and [`scram_entry`] accept.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Longest nonce (client part, or client and server parts together).
pub const NONCE_BYTES_MAX: usize = 512;
/// Random bytes in a generated nonce (base64-encoded to 24 characters).
pub const SERVER_NONCE_RANDOM_BYTES: usize = 18;
/// Fewest PBKDF2 iterations accepted: RFC 7677 §4 minimum; fewer is too weak.
pub const ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations accepted: bounds the CPU a client (or tooling) spends.
pub const ITERATIONS_MAX: u32 = 10_000_000;
/// Shortest salt accepted in the credentials file.
pub const SALT_BYTES_MIN: usize = 8;
/// Longest salt accepted anywhere.
pub const SALT_BYTES_MAX: usize = 64;
/// Largest credentials file.
pub const CREDENTIALS_FILE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest credentials-file line.
pub const CREDENTIALS_LINE_BYTES_MAX: usize = 1024;
/// Longest `e=` server error text the client keeps.
pub const SERVER_ERROR_BYTES_MAX: usize = 256;

/// Fuzzing entry points (`fuzz/fuzz_targets/scram.rs`, `credentials.rs`).
#[doc(hidden)]
pub mod fuzzing {
    use super::{ScramCredentials, ScramServer};

    /// The RFC 7677 example user ("user" / "pencil"), so fuzzed exchanges reach `finish`.
    const RFC_LINE: &str = "user:SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    /// Split `data` at its first byte into a client-first and a client-final message and
    /// run a server exchange on them: errors are fine, panics are not.
    pub fn fuzz_exchange(data: &[u8]) {
        let Ok(creds) = ScramCredentials::parse(RFC_LINE, "fuzz") else {
            return;
        };
        let Some((&cut, rest)) = data.split_first() else {
            return;
        };
        let (first, last) = rest.split_at(usize::from(cut).min(rest.len()));
        if let Ok((server, _)) = ScramServer::start(&creds, first) {
            let _ = server.finish(last);
        }
    }

    /// Parse any bytes as a credentials file: a set of users or an error naming a line.
    pub fn fuzz_credentials(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = ScramCredentials::parse(text, "fuzz");
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_fuzzed_exchange_has_a_real_user_to_reach() {
            let creds = ScramCredentials::parse(RFC_LINE, "fuzz").expect("RFC 7677 line");
            assert!(creds.get("user").is_some());
            fuzz_exchange(b"\x1en,,n=user,r=rOprNGfwEbeRWgbNEkqOc=biws,r=x,p=AAAA");
        }
    }
}
