#![forbid(unsafe_code)]
//! The edits `shardmq passwd` makes to a password file, as pure text → text functions.
//!
//! Owns: adding or replacing a user's line, deleting it, and hashing every plaintext line
//! (`-U`), with `mosquitto_passwd`'s rules for usernames. Invariant: lines that are not the
//! user's (comments, other users, blank lines) come out byte for byte as they went in, in
//! order; the output of every edit parses with [`PasswordFile::parse`].
//! Must not touch: files, terminals, randomness other than through [`Hash::new_pbkdf2`].

use crate::auth::passwd::{parse_line, Hash, PASSWORD_LINE_BYTES_MAX};

/// Longest username `mosquitto_passwd` accepts (it refuses longer ones).
pub const USERNAME_BYTES_MAX: usize = 65_535;
/// Longest password accepted (bounds hashing work; Mosquitto also stops at 65,535).
pub const PASSWORD_BYTES_MAX: usize = 65_535;

/// How `shardmq passwd` hashes new passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Salt bytes: 64 (Mosquitto 2.1) or 12 (what Mosquitto 2.0 accepts).
    pub salt_bytes: usize,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

/// Check a username as `mosquitto_passwd` does: not empty, no `:`, no control
/// characters, not too long.
pub fn check_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty username".into());
    }
    if user.contains(':') {
        return Err("username must not contain ':'".into());
    }
    if user.chars().any(char::is_control) || user.trim() != user {
        return Err(
            "username must not contain control characters or leading/trailing blanks".into(),
        );
    }
    if user.len() > USERNAME_BYTES_MAX {
        return Err(format!("username longer than {USERNAME_BYTES_MAX} bytes"));
    }
    Ok(())
}

/// The password file line for `user` with a fresh `$7$` hash of `password`.
pub fn new_line(user: &str, password: &[u8], params: HashParams) -> Result<String, String> {
    check_username(user)?;
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(format!("password longer than {PASSWORD_BYTES_MAX} bytes"));
    }
    let hash = Hash::new_pbkdf2(password, params.salt_bytes, params.iterations)?;
    let line = format!("{user}:{}", hash.encode());
    if line.len() > PASSWORD_LINE_BYTES_MAX {
        return Err(format!(
            "username too long for a {PASSWORD_LINE_BYTES_MAX}-byte line"
        ));
    }
    Ok(line)
}

/// The name on a line, if the line has one (comments and blank lines do not).
fn line_user(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(u, _)| u.trim())
}

/// `text` with `user`'s line replaced by `line`, or `line` appended.
pub fn set_user(text: &str, user: &str, line: &str) -> String {
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut found = false;
    for l in text.lines() {
        if line_user(l) == Some(user) {
            if !found {
                out.push_str(line);
                out.push('\n');
            }
            found = true;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `text` without `user`'s line; an error if the user is not there.
pub fn delete_user(text: &str, user: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for l in text.lines() {
        if line_user(l) == Some(user) {
            found = true;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if found {
        Ok(out)
    } else {
        Err(format!("user '{user}' not found"))
    }
}

/// `-U`: every `user:plaintext` line hashed; hashed lines, comments and blank lines kept.
/// A line that is neither (no `:`) is an error naming its line number.
pub fn hash_plaintext(text: &str, params: HashParams) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() * 2);
    for (index, l) in text.lines().enumerate() {
        let already_hashed = parse_line(l).is_ok();
        match l.split_once(':') {
            Some((user, password)) if !already_hashed && !l.starts_with('#') => {
                let line = new_line(user.trim(), password.as_bytes(), params)
                    .map_err(|e| format!("line {}: {e}", index + 1))?;
                out.push_str(&line);
            }
            None if !already_hashed => {
                return Err(format!("line {}: expected username:password", index + 1))
            }
            _ => out.push_str(l),
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::passwd::{PasswordFile, Verdict};

    const FAST: HashParams = HashParams {
        salt_bytes: 64,
        iterations: 2,
    };

    #[test]
    fn set_replaces_in_place_and_appends_new_users() {
        let a = new_line("alice", b"one", FAST).expect("line");
        let text = format!("# keep me\nbob:$6$x$y\n{a}\n\n");
        let a2 = new_line("alice", b"two", FAST).expect("line");
        let edited = set_user(&text, "alice", &a2);
        assert_eq!(edited, format!("# keep me\nbob:$6$x$y\n{a2}\n\n"));
        let c = new_line("carol", b"three", FAST).expect("line");
        assert_eq!(set_user(&edited, "carol", &c), format!("{edited}{c}\n"));
    }

    #[test]
    fn delete_removes_only_that_user_and_reports_a_missing_one() {
        let text = "# alice:comment\nalice:$6$x\nalicia:$6$y\n";
        assert_eq!(
            delete_user(text, "alice").expect("present"),
            "# alice:comment\nalicia:$6$y\n"
        );
        assert!(delete_user(text, "zed").is_err());
    }

    #[test]
    fn upgrade_hashes_plaintext_and_keeps_hashed_lines() {
        let hashed = new_line("bob", b"b", FAST).expect("line");
        let text = format!("# c\nalice:secret\n{hashed}\n\n");
        let up = hash_plaintext(&text, FAST).expect("valid");
        let f = PasswordFile::parse(&up, "t").expect("parses");
        assert_eq!(f.verify("alice", b"secret"), Verdict::Ok);
        assert_eq!(f.verify("bob", b"b"), Verdict::Ok);
        assert!(up.contains(&hashed) && up.starts_with("# c\n"));
        assert!(hash_plaintext("nocolon\n", FAST).is_err());
    }

    #[test]
    fn usernames_follow_mosquitto_passwd_rules() {
        for bad in ["", "a:b", "tab\there", " lead"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        assert!(check_username("ünïcode user").is_ok());
    }
}
