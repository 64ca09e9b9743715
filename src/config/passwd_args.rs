#![forbid(unsafe_code)]
//! The arguments of `shardmq passwd`, `mosquitto_passwd`'s flags (the command itself is in
//! `src/passwd_cmd.rs`, beside `main.rs`).
//!
//! Owns: parsing and the combinations `mosquitto_passwd` refuses. Must not touch: files.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::auth::passwd::{PBKDF2_ITERATIONS_DEFAULT, SALT_BYTES_DEFAULT};

/// `shardmq passwd [-H sha512-pbkdf2] [-c | -D] [-b] FILE USER [PASSWORD]` or `-U FILE`.
#[derive(Debug, Clone, ClapArgs)]
#[command(
    about = "Manage a Mosquitto-compatible password file (as mosquitto_passwd)",
    long_about = "Manage a Mosquitto-compatible password file, with mosquitto_passwd's flags. \
        Writes $7$ lines (PBKDF2-HMAC-SHA512). The password is read twice without echo from a \
        terminal, or from the first line of standard input otherwise (a second line, if any, \
        must repeat it)."
)]
pub struct PasswdArgs {
    /// Create a new password file, overwriting an existing one.
    #[arg(short = 'c', conflicts_with_all = ["delete", "update"])]
    pub create: bool,
    /// Delete USER rather than adding or updating their password.
    #[arg(short = 'D', conflicts_with_all = ["batch", "update"])]
    pub delete: bool,
    /// Batch mode: the password is the third argument (it shows in the process list).
    #[arg(short = 'b')]
    pub batch: bool,
    /// Hash every plaintext line of FILE in place.
    #[arg(short = 'U')]
    pub update: bool,
    /// Hash type: only `sha512-pbkdf2` ($7$) is written; `sha512` ($6$) is too weak.
    #[arg(short = 'H', value_name = "TYPE", default_value = "sha512-pbkdf2")]
    pub hash_type: String,
    /// PBKDF2 iterations (shardmq; Mosquitto 2.1 also has -I).
    #[arg(short = 'I', value_name = "N", default_value_t = PBKDF2_ITERATIONS_DEFAULT)]
    pub iterations: u32,
    /// Salt bytes: 64 (Mosquitto 2.1) or 12 (Mosquitto 2.0 accepts only 12) (shardmq).
    #[arg(long, value_name = "N", default_value_t = SALT_BYTES_DEFAULT)]
    pub salt_bytes: usize,
    /// The password file.
    pub file: PathBuf,
    /// The user to add, update or delete.
    pub username: Option<String>,
    /// The password, with -b only.
    pub password: Option<String>,
}

/// What to do, once the flags are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswdAction {
    /// Hash plaintext lines.
    Update,
    /// Remove a user.
    Delete(String),
    /// Add or replace a user; the password if given on the command line (-b).
    Set {
        /// The user.
        user: String,
        /// `Some` in batch mode.
        password: Option<String>,
        /// Start a new file.
        create: bool,
    },
}

impl PasswdArgs {
    /// The action these flags ask for, or why they make no sense together.
    pub fn action(&self) -> Result<PasswdAction, String> {
        if self.hash_type != "sha512-pbkdf2" {
            return Err(format!(
                "-H {}: only sha512-pbkdf2 is written (sha512 is a single unsalted-strength pass)",
                self.hash_type
            ));
        }
        let user = self.username.clone();
        match (self.update, self.delete, self.batch, user, &self.password) {
            (true, _, _, None, None) => Ok(PasswdAction::Update),
            (true, ..) => Err("-U takes only the password file".into()),
            (false, true, _, Some(u), None) => Ok(PasswdAction::Delete(u)),
            (false, false, true, Some(user), Some(p)) => Ok(PasswdAction::Set {
                user,
                password: Some(p.clone()),
                create: self.create,
            }),
            (false, false, false, Some(user), None) => Ok(PasswdAction::Set {
                user,
                password: None,
                create: self.create,
            }),
            (_, _, true, _, None) => Err("-b needs USER and PASSWORD".into()),
            (_, _, false, _, Some(_)) => Err("a password argument needs -b".into()),
            (_, _, _, None, _) => Err("missing USER".into()),
            (_, true, _, _, Some(_)) => Err("-D takes no password".into()),
        }
    }
}
