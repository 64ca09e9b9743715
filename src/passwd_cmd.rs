#![forbid(unsafe_code)]
//! `shardmq passwd`: `mosquitto_passwd` for shardmq, the file and terminal side.
//!
//! Owns: reading the password (twice without echo from a terminal, else from standard
//! input), reading and atomically replacing the file (a temporary file beside it, then a
//! rename, keeping an existing file's permissions; a new file is created 0600).
//! Invariant: the file written always loads with `PasswordFile::parse`; on any error the
//! old file is untouched. The text edits themselves are `shardmq::auth::passwd_edit`.
//! Must not touch: the broker.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use shardmq::auth::passwd::{PasswordFile, PASSWORD_FILE_BYTES_MAX};
use shardmq::auth::passwd_edit::{self, HashParams};
use shardmq::config::{PasswdAction, PasswdArgs};

/// Run the subcommand; errors are printed as `shardmq passwd: ...`.
pub fn run(args: &PasswdArgs) -> ExitCode {
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardmq passwd: {e}");
            ExitCode::from(1)
        }
    }
}

fn execute(args: &PasswdArgs) -> Result<(), String> {
    let params = HashParams {
        salt_bytes: args.salt_bytes,
        iterations: args.iterations,
    };
    let path = args.file.as_path();
    let text = match args.action()? {
        PasswdAction::Update => passwd_edit::hash_plaintext(&read_file(path)?, params)?,
        PasswdAction::Delete(user) => passwd_edit::delete_user(&read_file(path)?, &user)?,
        PasswdAction::Set {
            user,
            password,
            create,
        } => {
            passwd_edit::check_username(&user)?;
            let old = if create {
                String::new()
            } else {
                read_file(path)?
            };
            let password = match password {
                Some(p) => p,
                None => read_password()?,
            };
            let line = passwd_edit::new_line(&user, password.as_bytes(), params)?;
            passwd_edit::set_user(&old, &user, &line)
        }
    };
    PasswordFile::parse(&text, &path.display().to_string())
        .map_err(|e| format!("the result would not load, file left as it was: {e}"))?;
    write_atomically(path, &text)
}

fn read_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > PASSWORD_FILE_BYTES_MAX as u64 {
        return Err(format!("{}: larger than 16 MiB", path.display()));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Twice without echo from a terminal; else the first line of stdin (a second line, if
/// present, must repeat it).
fn read_password() -> Result<String, String> {
    let (first, second) = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let b = rpassword::prompt_password("Reenter password: ").map_err(|e| e.to_string())?;
        (a, Some(b))
    } else {
        let mut lines = std::io::stdin().lock().lines();
        let a = lines
            .next()
            .ok_or("no password on standard input")?
            .map_err(|e| e.to_string())?;
        let b = lines.next().transpose().map_err(|e| e.to_string())?;
        (a, b)
    };
    let strip = |s: String| s.trim_end_matches('\r').to_string();
    let first = strip(first);
    if let Some(second) = second.map(strip) {
        if second != first {
            return Err("passwords do not match".into());
        }
    }
    if first.is_empty() {
        return Err("empty password".into());
    }
    Ok(first)
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let _ = std::fs::remove_file(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)));
    if let Err(e) = written.and_then(|()| std::fs::rename(tmp, path)) {
        let _ = std::fs::remove_file(tmp);
        return Err(format!("{shown}: {e}"));
    }
    Ok(())
}
