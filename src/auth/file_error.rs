#![forbid(unsafe_code)]
//! The one error shape of the Mosquitto-compatible security files: file, line, problem.
//!
//! Owns: [`AuthFileError`] and reading a whole file under a size cap. Invariant: a loader
//! either returns a complete, validated structure or an error that names the file and, for
//! a problem on a line, the 1-based line; never a partial result that would "allow all".
//! Must not touch: parsing of any particular format.

use std::io::Read;
use std::path::Path;

/// A problem in a password or ACL file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFileError {
    /// The file as given.
    pub file: String,
    /// 1-based line number, or 0 for a whole-file problem (unreadable, too large).
    pub line: usize,
    /// What is wrong, for a person to fix. Never contains a password.
    pub problem: String,
}

impl std::fmt::Display for AuthFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.problem)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.problem)
        }
    }
}

impl std::error::Error for AuthFileError {}

/// An error at `line` of `file`.
pub(crate) fn at(file: &str, line: usize, problem: impl Into<String>) -> AuthFileError {
    AuthFileError {
        file: file.to_string(),
        line,
        problem: problem.into(),
    }
}

/// Read `path` as UTF-8 text of at most `bytes_max` bytes; the error names the file.
pub(crate) fn read_text(path: &Path, bytes_max: usize) -> Result<String, AuthFileError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| at(&name, 0, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(bytes_max)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| at(&name, 0, format!("cannot read: {e}")))?;
    if bytes.len() > bytes_max {
        return Err(at(&name, 0, format!("file larger than {bytes_max} bytes")));
    }
    String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        at(&name, line, "not valid UTF-8")
    })
}
