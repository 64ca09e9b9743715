//! HTTPS on the admin listener: `admin_certfile` and `admin_keyfile`, and client
//! certificates with `admin_cafile` and `admin_require_certificate` (the MQTT listener's
//! `cafile` and `require_certificate`, prefixed like the others).
//!
//! Owns: checking the options and loading them into a `rustls::ServerConfig` when the
//! configuration is read (start, `shardmq check`, reload), so a bad file is reported as
//! `FILE:LINE: admin_certfile: …` before anything starts. Invariants: certificate and key
//! both or neither; the client-certificate options only with them, and
//! `admin_require_certificate true` only with a CA. Must not touch: sockets (the admin
//! listener uses the loaded config).

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
    /// `admin_cafile`: CA certificates for client certificates, PEM.
    pub cafile: Option<PathBuf>,
    /// `admin_require_certificate`: every client must present a certificate from
    /// `cafile` (verified in the TLS handshake, before any HTTP is read).
    pub require_certificate: bool,
    /// What the admin listener serves with.
    pub server: Arc<rustls::ServerConfig>,
}

impl PartialEq for AdminTls {
    /// The same files (a reload compares settings, not loaded keys).
    fn eq(&self, other: &Self) -> bool {
        self.certfile == other.certfile
            && self.keyfile == other.keyfile
            && self.cafile == other.cafile
            && self.require_certificate == other.require_certificate
    }
}

/// The admin TLS options as the file gave them, each with its line.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdminTlsLines<'a> {
    /// `admin_certfile`.
    pub certfile: Option<&'a (PathBuf, usize)>,
    /// `admin_keyfile`.
    pub keyfile: Option<&'a (PathBuf, usize)>,
    /// `admin_cafile`.
    pub cafile: Option<&'a (PathBuf, usize)>,
    /// `admin_require_certificate`.
    pub require_certificate: Option<&'a (bool, usize)>,
}

/// Load the admin TLS options of `file` (each given with the line it is on).
pub fn load(file: &str, o: &AdminTlsLines<'_>) -> Result<Option<AdminTls>, String> {
    let at = |line: usize, problem: String| format!("{file}:{line}: {problem}");
    let (cert, key) = match (o.certfile, o.keyfile) {
        (None, None) => {
            let client = o.cafile.map(|c| c.1).or(o.require_certificate.map(|r| r.1));
            return match client {
                Some(line) => Err(at(
                    line,
                    "admin_cafile and admin_require_certificate need admin_certfile and admin_keyfile".into(),
                )),
                None => Ok(None),
            };
        }
        (Some((_, line)), None) => {
            return Err(at(*line, "admin_certfile needs admin_keyfile".into()))
        }
        (None, Some((_, line))) => {
            return Err(at(*line, "admin_keyfile needs admin_certfile".into()))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let require_certificate = o.require_certificate.is_some_and(|r| r.0);
    let opts = TlsOptions {
        certfile: cert.0.clone(),
        keyfile: key.0.clone(),
        cafile: o.cafile.map(|c| c.0.clone()),
        require_certificate,
        ..TlsOptions::default()
    };
    let server = tls::server_config(&opts).map_err(|e| match e.option {
        "certfile" => at(cert.1, format!("admin_certfile: {}", e.problem)),
        "cafile" => at(
            o.cafile.map_or(0, |c| c.1),
            format!("admin_cafile: {}", e.problem),
        ),
        "require_certificate" => at(
            o.require_certificate.map_or(0, |r| r.1),
            "admin_require_certificate true needs admin_cafile".into(),
        ),
        _ => at(key.1, format!("admin_keyfile: {}", e.problem)),
    })?;
    Ok(Some(AdminTls {
        certfile: cert.0.clone(),
        keyfile: key.0.clone(),
        cafile: o.cafile.map(|c| c.0.clone()),
        require_certificate,
        server,
    }))
}
