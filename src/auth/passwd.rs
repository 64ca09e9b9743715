#![forbid(unsafe_code)]
//! Mosquitto's `password_file`: loading, verifying, and writing `$7$` lines.
//!
//! Owns: username → [`Hash`], read once from a file in the format `mosquitto_passwd` writes
//! (`../docs/security.md`, "Migrating from Mosquitto"):
//!
//! ```text
//! # comment
//! alice:$7$101$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>
//! bob:$6$<b64 salt>$<b64 SHA-512(password || salt)>
//! carol:$argon2id$v=19$m=47104,t=1,p=1$<salt>$<hash>
//! ```
//!
//! Invariants: every entry was fully validated at load (a malformed line, a plaintext
//! password or a duplicate user fails the whole load with file and line; nothing is
//! skipped, so a broken file never means "allow all"); no plaintext password is held;
//! hashes are compared in constant time; an unknown user costs the same work as a known
//! one, so timing does not reveal who exists. Every cost is bounded by the `*_MAX` limits.
//! Must not touch: packets, sockets, threads, clocks. Verification is CPU work of ~1 ms per
//! 1,000 PBKDF2 iterations: the broker runs it off its shard loops, through
//! [`crate::auth::verifier`].

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::auth::file_error::{at, read_text, AuthFileError};

/// Largest password file accepted.
pub const PASSWORD_FILE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest line (Mosquitto skips usernames or hashes longer than 65,535; we refuse them).
pub const PASSWORD_LINE_BYTES_MAX: usize = 4096;
/// Most PBKDF2 iterations accepted: bounds the CPU one login costs (~10 s at the cap).
pub const PBKDF2_ITERATIONS_MAX: u32 = 10_000_000;
/// Iterations `shardmq passwd` writes: Mosquitto 2.1's default (2.0 wrote 101).
pub const PBKDF2_ITERATIONS_DEFAULT: u32 = 1000;
/// Salt `shardmq passwd` writes by default: Mosquitto 2.1's size. Mosquitto 2.0 accepts
/// only [`SALT_BYTES_MOSQUITTO_2_0`].
pub const SALT_BYTES_DEFAULT: usize = 64;
/// The only salt size Mosquitto 2.0's decoder accepts.
pub const SALT_BYTES_MOSQUITTO_2_0: usize = 12;
/// Largest Argon2 memory cost accepted, KiB (Mosquitto 2.1 writes 47,104).
pub const ARGON2_MEMORY_KIB_MAX: u32 = 256 * 1024;
/// Largest Argon2 time cost accepted.
pub const ARGON2_TIME_COST_MAX: u32 = 16;
/// Largest Argon2 parallelism accepted.
pub const ARGON2_LANES_MAX: u32 = 4;
/// Bytes of a SHA-512 digest, the length of `$6$` and `$7$` hashes.
const HASH_BYTES: usize = 64;

/// The answer to "may `user` log in with `password`?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password matches.
    Ok,
    /// The user exists; the password does not match.
    BadPassword,
    /// No such user: refused even when anonymous clients are allowed (Mosquitto's rule).
    UnknownUser,
}

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$6$`: one pass of SHA-512 over password then salt.
    Sha512 {
        /// Salt (12 or 64 bytes).
        salt: Vec<u8>,
        /// Digest.
        hash: [u8; HASH_BYTES],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512 with a 64-byte output.
    Pbkdf2 {
        /// Iteration count (1..=[`PBKDF2_ITERATIONS_MAX`]).
        iterations: u32,
        /// Salt (12 or 64 bytes).
        salt: Vec<u8>,
        /// Derived key.
        hash: [u8; HASH_BYTES],
    },
    /// `$argon2id$`: a PHC string, validated at load, with bounded costs.
    Argon2id(String),
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hash::Sha512 { .. } => f.write_str("Hash::Sha512(..)"),
            Hash::Pbkdf2 { iterations, .. } => write!(f, "Hash::Pbkdf2({iterations}, ..)"),
            Hash::Argon2id(_) => f.write_str("Hash::Argon2id(..)"),
        }
    }
}

impl Hash {
    /// Does `password` hash to this? Constant-time in the comparison.
    pub fn matches(&self, password: &[u8]) -> bool {
        match self {
            Hash::Sha512 { salt, hash } => {
                let mut d = Sha512::new();
                d.update(password);
                d.update(salt);
                bool::from(d.finalize().as_slice().ct_eq(hash))
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => bool::from(pbkdf2_sha512(password, salt, *iterations).ct_eq(hash)),
            Hash::Argon2id(phc) => argon2_matches(phc, password),
        }
    }

    /// The hash as `mosquitto_passwd` writes it after `user:`.
    pub fn encode(&self) -> String {
        match self {
            Hash::Sha512 { salt, hash } => {
                format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            Hash::Argon2id(phc) => phc.clone(),
        }
    }

    /// A new `$7$` hash of `password` with a random salt of `salt_bytes` (12 or 64).
    pub fn new_pbkdf2(password: &[u8], salt_bytes: usize, iterations: u32) -> Result<Hash, String> {
        check_salt_len(salt_bytes)?;
        check_iterations(iterations)?;
        let mut salt = vec![0u8; salt_bytes];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
        let hash = pbkdf2_sha512(password, &salt, iterations);
        Ok(Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        })
    }
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_BYTES] {
    pbkdf2::pbkdf2_hmac_array::<Sha512, HASH_BYTES>(password, salt, iterations)
}

fn argon2_matches(phc: &str, password: &[u8]) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A loaded password file: who may log in, and with what.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    generation: u64,
    users: HashMap<String, Hash>,
    /// Verified instead of a real entry for unknown users, so they cost the same time.
    decoy: Option<Hash>,
}

impl PasswordFile {
    /// Read and validate `path`. Any problem (unreadable, too large, a bad line) is an
    /// error naming the file and line.
    pub fn load(path: &Path) -> Result<PasswordFile, AuthFileError> {
        let text = read_text(path, PASSWORD_FILE_BYTES_MAX)?;
        PasswordFile::parse(&text, &path.display().to_string())
    }

    /// Parse file text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<PasswordFile, AuthFileError> {
        if text.len() > PASSWORD_FILE_BYTES_MAX {
            return Err(at(name, 0, "file larger than 16 MiB"));
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users: HashMap<String, Hash> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let Some((user, hash)) = parse_line(raw).map_err(|p| at(name, line_no, p))? else {
                continue;
            };
            if let Some(first) = first_line.get(&user) {
                return Err(at(
                    name,
                    line_no,
                    format!("user '{user}' already defined on line {first}"),
                ));
            }
            first_line.insert(user.clone(), line_no);
            users.insert(user, hash);
        }
        let decoy = users.values().next().map(decoy_of);
        Ok(PasswordFile {
            generation: crate::auth::acl::next_generation(),
            users,
            decoy,
        })
    }

    /// Check `password` for `user`. Costs one hash computation whatever the answer.
    pub fn verify(&self, user: &str, password: &[u8]) -> Verdict {
        match self.users.get(user) {
            Some(h) if h.matches(password) => Verdict::Ok,
            Some(_) => Verdict::BadPassword,
            None => {
                if let Some(d) = &self.decoy {
                    // Same work as a real entry; the result is meaningless and ignored.
                    let _ = std::hint::black_box(d.matches(password));
                }
                Verdict::UnknownUser
            }
        }
    }

    /// This load's generation number (unique in the process; keys [`super::VerifyCache`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Is `user` in the file?
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users at all (nobody can log in with a password).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A hash of the same kind and cost as `h`, with a fixed salt and an impossible digest.
fn decoy_of(h: &Hash) -> Hash {
    match h {
        Hash::Sha512 { salt, .. } => Hash::Sha512 {
            salt: vec![0x5a; salt.len()],
            hash: [0; HASH_BYTES],
        },
        Hash::Pbkdf2 {
            iterations, salt, ..
        } => Hash::Pbkdf2 {
            iterations: *iterations,
            salt: vec![0x5a; salt.len()],
            hash: [0; HASH_BYTES],
        },
        Hash::Argon2id(phc) => Hash::Argon2id(phc.clone()),
    }
}

/// One line: `Ok(None)` for a blank line or a comment, the entry, or what is wrong.
/// Errors never quote the hash field: it may be a plaintext password.
pub fn parse_line(raw: &str) -> Result<Option<(String, Hash)>, String> {
    if raw.len() > PASSWORD_LINE_BYTES_MAX {
        return Err(format!("line longer than {PASSWORD_LINE_BYTES_MAX} bytes"));
    }
    let line = raw.trim_end_matches('\r');
    if line.starts_with('#') || line.trim().is_empty() {
        return Ok(None);
    }
    let Some((user, hash)) = line.split_once(':') else {
        return Err("expected username:hash (no ':' on the line)".into());
    };
    let (user, hash) = (user.trim(), hash.trim());
    if user.is_empty() {
        return Err("empty username".into());
    }
    if user.chars().any(char::is_control) {
        return Err("username contains a control character".into());
    }
    if hash.contains(':') {
        return Err(format!("user '{user}': more than one ':' on the line"));
    }
    let parsed = if let Some(rest) = hash.strip_prefix("$6$") {
        parse_sha512(rest)
    } else if let Some(rest) = hash.strip_prefix("$7$") {
        parse_pbkdf2(rest)
    } else if hash.starts_with("$argon2id$") {
        parse_argon2id(hash)
    } else if hash.starts_with('$') {
        Err("unknown hash type (expected $6$, $7$ or $argon2id$)".to_string())
    } else {
        Err("plaintext password; hash the file with 'shardmq passwd -U FILE'".to_string())
    };
    parsed
        .map(|h| Some((user.to_string(), h)))
        .map_err(|p| format!("user '{user}': {p}"))
}

fn parse_sha512(rest: &str) -> Result<Hash, String> {
    let (salt, hash) = rest.split_once('$').ok_or("expected $6$<salt>$<hash>")?;
    Ok(Hash::Sha512 {
        salt: decode_salt(salt)?,
        hash: decode_hash(hash)?,
    })
}

fn parse_pbkdf2(rest: &str) -> Result<Hash, String> {
    let mut parts = rest.splitn(3, '$');
    let (Some(count), Some(salt), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected $7$<iterations>$<salt>$<hash>".into());
    };
    if count.is_empty() || count.len() > 10 || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err("iteration count is not a number".into());
    }
    let iterations: u32 = count
        .parse()
        .map_err(|_| format!("iteration count above {PBKDF2_ITERATIONS_MAX}"))?;
    check_iterations(iterations)?;
    Ok(Hash::Pbkdf2 {
        iterations,
        salt: decode_salt(salt)?,
        hash: decode_hash(hash)?,
    })
}

fn parse_argon2id(phc: &str) -> Result<Hash, String> {
    use argon2::password_hash::PasswordHash;
    let parsed = PasswordHash::new(phc).map_err(|e| format!("bad $argon2id$ string: {e}"))?;
    let params =
        argon2::Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() > ARGON2_MEMORY_KIB_MAX
        || params.t_cost() > ARGON2_TIME_COST_MAX
        || params.p_cost() > ARGON2_LANES_MAX
    {
        return Err(format!(
            "argon2 costs above the limits (m ≤ {ARGON2_MEMORY_KIB_MAX} KiB, t ≤ {ARGON2_TIME_COST_MAX}, p ≤ {ARGON2_LANES_MAX})"
        ));
    }
    if parsed.hash.is_none() {
        return Err("argon2 string without a hash".into());
    }
    Ok(Hash::Argon2id(phc.to_string()))
}

fn check_iterations(iterations: u32) -> Result<(), String> {
    if iterations == 0 || iterations > PBKDF2_ITERATIONS_MAX {
        return Err(format!(
            "iteration count {iterations} outside 1..={PBKDF2_ITERATIONS_MAX}"
        ));
    }
    Ok(())
}

fn check_salt_len(len: usize) -> Result<(), String> {
    if len == SALT_BYTES_MOSQUITTO_2_0 || len == SALT_BYTES_DEFAULT {
        Ok(())
    } else {
        Err(format!(
            "salt of {len} bytes (Mosquitto uses {SALT_BYTES_MOSQUITTO_2_0} or {SALT_BYTES_DEFAULT})"
        ))
    }
}

fn decode_salt(b64: &str) -> Result<Vec<u8>, String> {
    let salt = STANDARD
        .decode(b64)
        .map_err(|_| "salt is not base64".to_string())?;
    check_salt_len(salt.len())?;
    Ok(salt)
}

fn decode_hash(b64: &str) -> Result<[u8; HASH_BYTES], String> {
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| "hash is not base64".to_string())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("hash of {} bytes, expected {HASH_BYTES}", b.len()))
}

#[cfg(test)]
mod tests;

/// Fuzzing entry point (`fuzz/fuzz_targets/password_file.rs`): any bytes load to a file or
/// to an error naming a line; every loaded hash re-encodes to a line that parses the same.
/// (Verification is not fuzzed: a fuzzed iteration count makes it arbitrarily slow.)
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PasswordFile::parse(text, "fuzz.pw") {
        Ok(f) => {
            for (user, hash) in &f.users {
                let again = parse_line(&format!("{user}:{}", hash.encode()));
                assert!(
                    matches!(again, Ok(Some((ref u, ref h))) if u == user && h == hash),
                    "re-encoded entry for {user} parses back"
                );
            }
        }
        Err(e) => assert!(e.line >= 1 || e.problem.contains("16 MiB"), "{e}"),
    }
}
