//! HTTPS on the admin listener: `admin_certfile` and `admin_keyfile`.
//!
//! Owns: checking the pair and loading it into a `rustls::ServerConfig` when the
//! configuration is read (start, `shardmq check`, reload), so a bad file is reported as
//! `FILE:LINE: admin_certfile: …` before anything starts. Invariant: both options or
//! neither. Must not touch: sockets (the admin listener uses the loaded config).

use std::path::PathBuf;
use std::sync::Arc;

use crate::transport::tls::{self, TlsOptions};

/// The admin listener's certificate, loaded.
#[derive(Debug, Clone)]
pub struct AdminTls {
    /// `admin_certfile`: the certificate chain, PEM, leaf first.
    pub certfile: PathBuf,
    /// `admin_keyfile`: its private key, PEM.
    pub keyfile: PathBuf,
    /// What the admin listener serves with.
    pub server: Arc<rustls::ServerConfig>,
}

impl PartialEq for AdminTls {
    /// The same files (a reload compares settings, not loaded keys).
    fn eq(&self, other: &Self) -> bool {
        self.certfile == other.certfile && self.keyfile == other.keyfile
    }
}

/// Load `admin_certfile` and `admin_keyfile`, each given with the line it is on in `file`.
pub fn load(
    file: &str,
    cert: Option<&(PathBuf, usize)>,
    key: Option<&(PathBuf, usize)>,
) -> Result<Option<AdminTls>, String> {
    let at = |line: usize, problem: String| format!("{file}:{line}: {problem}");
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some((_, line)), None) => {
            return Err(at(*line, "admin_certfile needs admin_keyfile".into()))
        }
        (None, Some((_, line))) => {
            return Err(at(*line, "admin_keyfile needs admin_certfile".into()))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let opts = TlsOptions {
        certfile: cert.0.clone(),
        keyfile: key.0.clone(),
        ..TlsOptions::default()
    };
    let server = tls::server_config(&opts).map_err(|e| match e.option {
        "certfile" => at(cert.1, format!("admin_certfile: {}", e.problem)),
        _ => at(key.1, format!("admin_keyfile: {}", e.problem)),
    })?;
    Ok(Some(AdminTls {
        certfile: cert.0.clone(),
        keyfile: key.0.clone(),
        server,
    }))
}
