//! The SCRAM credentials file: parsing, loading, lookup, and the decoy for unknown users.
//!
//! Owns: username → [`ScramEntry`] (salt, iteration count, StoredKey, ServerKey), read once
//! from a file whose format is in `docs/decisions/0004-enhanced-auth.md`:
//!
//! ```text
//! # comment
//! username:SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
//! ```
//!
//! Invariants: no plaintext password is ever held; every entry was fully validated (a bad
//! line fails the whole load with its file and line, it is never skipped); an empty file
//! means nobody can log in. Unknown users get a deterministic decoy entry shaped like the
//! file's typical entry, so the server-first-message does not reveal who exists.
//! Must not touch: the SCRAM message grammar, packets, sockets.

use std::collections::hash_map::{Entry, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use crate::auth::keys::{self, Key, KEY_BYTES};
use crate::auth::{
    CREDENTIALS_FILE_BYTES_MAX, CREDENTIALS_LINE_BYTES_MAX, ITERATIONS_MAX, ITERATIONS_MIN,
    PASSWORD_BYTES_MAX, SALT_BYTES_MAX, SALT_BYTES_MIN, SCRAM_SHA_256, USERNAME_BYTES_MAX,
};

/// Salt length that [`scram_entry`] generates.
const GENERATED_SALT_BYTES: usize = 16;

/// What the server stores for one user: enough to verify a proof and to prove itself,
/// not enough to log in as the user elsewhere without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramEntry {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl ScramEntry {
    /// PBKDF2 iteration count (4096..=10,000,000).
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
    /// The salt (8..=64 bytes).
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
    /// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`.
    pub fn stored_key(&self) -> &[u8; KEY_BYTES] {
        &self.stored_key
    }
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub fn server_key(&self) -> &[u8; KEY_BYTES] {
        &self.server_key
    }

    /// Derives the entry for `password` (runs PBKDF2: `iterations` HMAC rounds).
    fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> ScramEntry {
        let (stored_key, server_key) =
            keys::stored_and_server_key(password.as_bytes(), &salt, iterations);
        ScramEntry {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// The entry as one line of the credentials file.
    fn to_line(&self, user: &str) -> String {
        format!(
            "{user}:{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            keys::b64(&self.salt),
            keys::b64(&self.stored_key),
            keys::b64(&self.server_key)
        )
    }
}

impl std::fmt::Debug for ScramEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("ScramEntry")
            .field("iterations", &self.iterations)
            .field("salt_bytes", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// A credentials file that could not be used: `FILE:LINE: PROBLEM`, or `FILE: PROBLEM` when
/// the problem is not on one line (`line` is then 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsError {
    /// The file (or source name) the problem is in.
    pub file: String,
    /// 1-based line number, or 0 for a whole-file problem.
    pub line: usize,
    /// What is wrong, for a person to fix.
    pub problem: String,
}

impl std::fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.problem)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.problem)
        }
    }
}

impl std::error::Error for CredentialsError {}

fn error(file: &str, line: usize, problem: impl Into<String>) -> CredentialsError {
    CredentialsError {
        file: file.to_owned(),
        line,
        problem: problem.into(),
    }
}

/// All SCRAM-SHA-256 users, read once. Immutable after loading. The default holds nobody,
/// so every exchange fails (never "allow all").
#[derive(Debug, Clone)]
pub struct ScramCredentials {
    users: HashMap<String, ScramEntry>,
    /// Most common iteration count in the file (4096 if empty): the decoy uses it.
    decoy_iterations: u32,
    /// Most common salt length in the file (16 if empty): the decoy uses it.
    decoy_salt_bytes: usize,
}

impl Default for ScramCredentials {
    fn default() -> ScramCredentials {
        ScramCredentials {
            users: HashMap::new(),
            decoy_iterations: ITERATIONS_MIN,
            decoy_salt_bytes: GENERATED_SALT_BYTES,
        }
    }
}

impl ScramCredentials {
    /// Reads and parses a credentials file (at most 16 MiB, UTF-8).
    pub fn load(path: &Path) -> Result<ScramCredentials, CredentialsError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| error(&name, 0, format!("{e}")))?;
        let mut bytes = Vec::new();
        let limit = CREDENTIALS_FILE_BYTES_MAX as u64 + 1;
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| error(&name, 0, format!("{e}")))?;
        if bytes.len() > CREDENTIALS_FILE_BYTES_MAX {
            return Err(error(&name, 0, "file larger than 16 MiB"));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            error(&name, line, "not UTF-8")
        })?;
        Self::parse(&text, &name)
    }

    /// Parses credentials text; `source_name` names it in errors. Blank lines and lines
    /// whose first non-blank character is `#` are ignored; any other line must be a valid
    /// entry, and a username may appear once.
    pub fn parse(text: &str, source_name: &str) -> Result<ScramCredentials, CredentialsError> {
        if text.len() > CREDENTIALS_FILE_BYTES_MAX {
            return Err(error(source_name, 0, "file larger than 16 MiB"));
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users: HashMap<String, (ScramEntry, usize)> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, entry) =
                parse_line(line).map_err(|problem| error(source_name, line_no, problem))?;
            match users.entry(user) {
                Entry::Occupied(first) => {
                    let problem = format!(
                        "duplicate user '{}' (first defined on line {})",
                        first.key(),
                        first.get().1
                    );
                    return Err(error(source_name, line_no, problem));
                }
                Entry::Vacant(slot) => {
                    slot.insert((entry, line_no));
                }
            }
        }
        let users: HashMap<String, ScramEntry> =
            users.into_iter().map(|(u, (e, _))| (u, e)).collect();
        let decoy_iterations = most_common(users.values().map(|e| e.iterations as usize))
            .map_or(ITERATIONS_MIN, |n| n as u32);
        let decoy_salt_bytes =
            most_common(users.values().map(|e| e.salt.len())).unwrap_or(GENERATED_SALT_BYTES);
        Ok(ScramCredentials {
            users,
            decoy_iterations,
            decoy_salt_bytes,
        })
    }

    /// The entry for `user` (exact, byte-wise match), if any.
    pub fn get(&self, user: &str) -> Option<&ScramEntry> {
        self.users.get(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when nobody can log in.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The real entry and `true`, or for an unknown user a decoy entry and `false`.
    /// The decoy is a deterministic function of the username and a per-process secret,
    /// shaped like the file's typical entry. `None` only if the random source fails.
    pub(crate) fn entry_or_decoy(&self, user: &str) -> Option<(ScramEntry, bool)> {
        let secret = process_secret()?;
        // Build the decoy even for known users so both paths cost the same.
        let decoy = self.decoy(secret, user);
        match self.users.get(user) {
            Some(entry) => Some((entry.clone(), true)),
            None => Some((decoy, false)),
        }
    }

    fn decoy(&self, secret: &Key, user: &str) -> ScramEntry {
        let mut salt = keys::hmac(secret, &[b"decoy salt 1\0", user.as_bytes()]).to_vec();
        salt.extend_from_slice(&keys::hmac(secret, &[b"decoy salt 2\0", user.as_bytes()]));
        salt.truncate(self.decoy_salt_bytes.clamp(SALT_BYTES_MIN, SALT_BYTES_MAX));
        ScramEntry {
            iterations: self.decoy_iterations,
            salt,
            stored_key: keys::hmac(secret, &[b"decoy stored\0", user.as_bytes()]),
            server_key: keys::hmac(secret, &[b"decoy server\0", user.as_bytes()]),
        }
    }
}

/// A random secret drawn once per process: decoys stay stable across credential reloads,
/// so reloading cannot reveal which names are unknown.
fn process_secret() -> Option<&'static Key> {
    static SECRET: OnceLock<Key> = OnceLock::new();
    if let Some(secret) = SECRET.get() {
        return Some(secret);
    }
    let fresh = keys::random_bytes::<KEY_BYTES>().ok()?;
    // If another thread won the race its secret is kept; either is fine.
    Some(SECRET.get_or_init(|| fresh))
}

/// The most common value (ties: the largest), `None` when there are none.
fn most_common(values: impl Iterator<Item = usize>) -> Option<usize> {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(v, n)| (n, v))
        .map(|(v, _)| v)
}

/// Parses one non-comment line. The username may contain `:`, so the line is split from
/// the right, where the fields have a fixed shape.
fn parse_line(line: &str) -> Result<(String, ScramEntry), String> {
    const SHAPE: &str =
        "expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
    if line.len() > CREDENTIALS_LINE_BYTES_MAX {
        return Err(format!(
            "line longer than {CREDENTIALS_LINE_BYTES_MAX} bytes"
        ));
    }
    let mut fields = line.rsplitn(4, ':');
    let (Some(server_key), Some(salt_and_stored), Some(scheme_and_count), Some(user)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SHAPE.to_owned());
    };
    check_username(user)?;
    let Some((scheme, count)) = scheme_and_count.split_once('$') else {
        return Err(SHAPE.to_owned());
    };
    if scheme != SCRAM_SHA_256 {
        return Err(format!(
            "unsupported scheme '{scheme}' (only {SCRAM_SHA_256})"
        ));
    }
    let iterations = parse_iterations(count)?;
    let Some((salt, stored_key)) = salt_and_stored.split_once('$') else {
        return Err(SHAPE.to_owned());
    };
    let salt = match keys::unb64(salt) {
        Some(s) if (SALT_BYTES_MIN..=SALT_BYTES_MAX).contains(&s.len()) => s,
        Some(s) => return Err(format!("salt is {} bytes, want 8 to 64", s.len())),
        None => return Err("salt is not valid base64".to_owned()),
    };
    let stored_key =
        keys::unb64_key(stored_key).ok_or("StoredKey is not 32 bytes of base64 (44 characters)")?;
    let server_key =
        keys::unb64_key(server_key).ok_or("ServerKey is not 32 bytes of base64 (44 characters)")?;
    let entry = ScramEntry {
        iterations,
        salt,
        stored_key,
        server_key,
    };
    Ok((user.to_owned(), entry))
}

fn check_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty username".to_owned());
    }
    if user.len() > USERNAME_BYTES_MAX {
        return Err(format!("username longer than {USERNAME_BYTES_MAX} bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err("username contains a control character".to_owned());
    }
    if user.trim() != user {
        return Err("username has leading or trailing whitespace".to_owned());
    }
    Ok(())
}

fn parse_iterations(count: &str) -> Result<u32, String> {
    if count.is_empty() || count.len() > 10 || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("iteration count '{count}' is not a number"));
    }
    match count.parse::<u32>() {
        Ok(n) if n < ITERATIONS_MIN => Err(format!(
            "iteration count {n} is below {ITERATIONS_MIN} (too weak)"
        )),
        Ok(n) if n > ITERATIONS_MAX => Err(format!(
            "iteration count {n} is above {ITERATIONS_MAX} (too costly)"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("iteration count '{count}' is out of range")),
    }
}

/// One credentials-file line for `user` and `password`, with a fresh random 16-byte salt
/// (runs PBKDF2: `iterations` HMAC rounds). For tooling and tests.
///
/// Errors (with `file` "scram_entry" and `line` 0) for a username the file cannot hold,
/// a password over 1024 bytes, an iteration count outside 4096..=10,000,000, or a failed
/// random source.
pub fn scram_entry(
    user: &str,
    password: &str,
    iterations: u32,
) -> Result<String, CredentialsError> {
    let fail = |problem: String| error("scram_entry", 0, problem);
    check_username(user).map_err(fail)?;
    if user.starts_with('#') {
        return Err(fail(
            "username starts with '#' (would read as a comment)".to_owned(),
        ));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(fail(format!(
            "password longer than {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    parse_iterations(&iterations.to_string()).map_err(fail)?;
    let salt = keys::random_bytes::<GENERATED_SALT_BYTES>()
        .map_err(|e| fail(format!("random source failed: {e}")))?;
    Ok(ScramEntry::derive(password, salt.to_vec(), iterations).to_line(user))
}

/// Test-only: an entry for a given salt, to reproduce published vectors.
#[cfg(test)]
pub(crate) fn entry_line_with_salt(
    user: &str,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> String {
    ScramEntry::derive(password, salt.to_vec(), iterations).to_line(user)
}

#[cfg(test)]
mod tests;
