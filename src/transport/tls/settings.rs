//! A listener's TLS files and options, turned into a `rustls::ServerConfig`.
//!
//! Owns: reading certificate, key, CA and CRL files, and mapping Mosquitto's `tls_version`
//! and OpenSSL-style `ciphers` to what rustls offers. Invariants: the result offers TLS 1.2
//! and 1.3 only, with rustls's forward-secret AEAD suites only; every problem is an error
//! that names the option it came from (so the caller can name the file and line), and a
//! failed build changes nothing (reload keeps the old config). Must not touch: sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// `tls_version`: the lowest version offered (Mosquitto's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// Parse `tlsv1.2` / `tlsv1.3`; older versions are refused by name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "tlsv1.2" => Ok(TlsVersion::Tls12),
            "tlsv1.3" => Ok(TlsVersion::Tls13),
            "tlsv1" | "tlsv1.0" | "tlsv1.1" => Err(format!(
                "tls_version {s} is refused: TLS before 1.2 is broken; use tlsv1.2 or tlsv1.3"
            )),
            _ => Err(format!(
                "tls_version: expected tlsv1.2 or tlsv1.3, got '{s}'"
            )),
        }
    }
}

/// What a listener says about TLS (Mosquitto's option names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `certfile`: the server certificate chain, PEM, leaf first.
    pub certfile: PathBuf,
    /// `keyfile`: the server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: PathBuf,
    /// `cafile`: CA certificates for client certificates, PEM.
    pub cafile: Option<PathBuf>,
    /// `capath`: a directory of CA certificate files, PEM.
    pub capath: Option<PathBuf>,
    /// `require_certificate`: clients must present a certificate from the CA.
    pub require_certificate: bool,
    /// `crlfile`: revoked client certificates, PEM.
    pub crlfile: Option<PathBuf>,
    /// `tls_version`.
    pub version: TlsVersion,
    /// `ciphers`: TLS 1.2 suites, OpenSSL or IANA names, `:`-separated.
    pub ciphers: Option<String>,
    /// `ciphers_tls1.3`: TLS 1.3 suites.
    pub ciphers_tls13: Option<String>,
}

/// A TLS option that cannot be served: which option, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The option's name as in the file (`certfile`, `ciphers`, …).
    pub option: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.option, self.problem)
    }
}

impl std::error::Error for SettingsError {}

fn err(option: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        option,
        problem: problem.into(),
    }
}

/// Files in `capath` read at most (a CA directory, not a dump).
const CAPATH_FILES_MAX: usize = 1024;

/// OpenSSL's suite names next to rustls's, for every suite rustls offers.
const SUITE_NAMES: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// OpenSSL list keywords meaning "the usual strong set", and exclusions of classes rustls
/// never offers (so excluding them changes nothing). Mosquitto's default list uses these.
const ALL_KEYWORDS: &[&str] = &[
    "DEFAULT", "HIGH", "ALL", "ECDHE", "EECDH", "AESGCM", "CHACHA20",
];
const NEVER_OFFERED: &[&str] = &[
    "aNULL", "eNULL", "NULL", "LOW", "EXPORT", "EXP", "MEDIUM", "MD5", "RC4", "DES", "3DES",
    "SSLv2", "SSLv3", "PSK", "SRP", "DSS", "aDSS", "CAMELLIA", "SEED", "IDEA", "kRSA", "RSA",
    "SHA1", "CBC", "ADH", "AECDH", "DH", "EDH", "kDHE",
];

/// Build the server configuration for one listener. Reads every file now; call again on
/// SIGHUP and keep the old `Arc` if this fails.
pub fn server_config(o: &TlsOptions) -> Result<Arc<ServerConfig>, SettingsError> {
    let base = rustls::crypto::ring::default_provider();
    let mut suites = Vec::new();
    if o.version == TlsVersion::Tls12 {
        suites.extend(pick_suites(
            &base.cipher_suites,
            o.ciphers.as_deref(),
            false,
            "ciphers",
        )?);
    }
    suites.extend(pick_suites(
        &base.cipher_suites,
        o.ciphers_tls13.as_deref(),
        true,
        "ciphers_tls1.3",
    )?);
    if o.version == TlsVersion::Tls13 && o.ciphers.is_some() {
        // Harmless but worth knowing: Mosquitto accepts it too.
        pick_suites(&base.cipher_suites, o.ciphers.as_deref(), false, "ciphers")?;
    }
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..base
    });
    let versions: &[&rustls::SupportedProtocolVersion] = match o.version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| err("tls_version", e.to_string()))?;
    let builder = if o.require_certificate {
        let roots = Arc::new(load_roots(o)?);
        let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider);
        if let Some(crl) = &o.crlfile {
            v = v
                .with_crls(load_crls(crl)?)
                .only_check_end_entity_revocation();
        }
        builder.with_client_cert_verifier(v.build().map_err(|e| err("cafile", e.to_string()))?)
    } else {
        if o.crlfile.is_some() {
            return Err(err("crlfile", "needs require_certificate true"));
        }
        builder.with_no_client_auth()
    };
    let chain = load_certs(&o.certfile, "certfile")?;
    let key = PrivateKeyDer::from_pem_file(&o.keyfile)
        .map_err(|e| err("keyfile", format!("{}: {e}", o.keyfile.display())))?;
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("keyfile", format!("{}: {e}", o.keyfile.display())))?;
    Ok(Arc::new(config))
}

/// The suites of one version named by an OpenSSL-style list (all of them for `None`).
fn pick_suites(
    offered: &[SupportedCipherSuite],
    list: Option<&str>,
    tls13: bool,
    option: &'static str,
) -> Result<Vec<SupportedCipherSuite>, SettingsError> {
    let of_version: Vec<SupportedCipherSuite> = offered
        .iter()
        .copied()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)) == tls13)
        .collect();
    let Some(list) = list else {
        return Ok(of_version);
    };
    let mut chosen: Vec<CipherSuite> = Vec::new();
    let mut removed: Vec<CipherSuite> = Vec::new();
    for item in list.split([':', ',', ' ']).filter(|s| !s.is_empty()) {
        let (negated, name) = match item.strip_prefix(['!', '-']) {
            Some(rest) => (true, rest),
            None => (false, item.strip_prefix('+').unwrap_or(item)),
        };
        if name.starts_with('@') || (negated && NEVER_OFFERED.contains(&name)) {
            continue;
        }
        let named: Vec<CipherSuite> = if ALL_KEYWORDS.contains(&name) {
            of_version.iter().map(|s| s.suite()).collect()
        } else {
            let Some(&(_, cs)) = SUITE_NAMES
                .iter()
                .find(|(ossl, cs)| *ossl == name || cs.as_str() == Some(name))
            else {
                return Err(err(
                    option,
                    format!(
                        "unknown or weak cipher suite '{name}' (rustls offers: {})",
                        names(&of_version)
                    ),
                ));
            };
            if !of_version.iter().any(|s| s.suite() == cs) {
                return Err(err(
                    option,
                    format!(
                        "'{name}' is not a TLS {} suite",
                        if tls13 { "1.3" } else { "1.2" }
                    ),
                ));
            }
            vec![cs]
        };
        if negated {
            removed.extend(named);
        } else {
            for c in named {
                if !chosen.contains(&c) {
                    chosen.push(c);
                }
            }
        }
    }
    chosen.retain(|c| !removed.contains(c));
    if chosen.is_empty() {
        return Err(err(option, "no cipher suite left"));
    }
    Ok(chosen
        .iter()
        .filter_map(|c| of_version.iter().copied().find(|s| s.suite() == *c))
        .collect())
}

fn names(suites: &[SupportedCipherSuite]) -> String {
    suites
        .iter()
        .filter_map(|s| {
            SUITE_NAMES
                .iter()
                .find(|(_, c)| *c == s.suite())
                .map(|(n, _)| *n)
        })
        .collect::<Vec<_>>()
        .join(":")
}

fn load_certs(
    path: &Path,
    option: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err(option, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            option,
            format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// `cafile` and every certificate file in `capath`.
fn load_roots(o: &TlsOptions) -> Result<RootCertStore, SettingsError> {
    let mut roots = RootCertStore::empty();
    let mut add = |certs: Vec<CertificateDer<'static>>, option| {
        for c in certs {
            roots
                .add(c)
                .map_err(|e| err(option, format!("bad CA certificate: {e}")))?;
        }
        Ok::<(), SettingsError>(())
    };
    if let Some(f) = &o.cafile {
        add(load_certs(f, "cafile")?, "cafile")?;
    }
    if let Some(dir) = &o.capath {
        let entries =
            std::fs::read_dir(dir).map_err(|e| err("capath", format!("{}: {e}", dir.display())))?;
        for entry in entries.take(CAPATH_FILES_MAX).flatten() {
            let p = entry.path();
            if p.is_file() {
                // Hashed links, CRLs and keys may sit beside the CAs; take what parses.
                if let Ok(certs) = load_certs(&p, "capath") {
                    add(certs, "capath")?;
                }
            }
        }
    }
    if roots.is_empty() {
        let option = match (&o.capath, &o.cafile) {
            (Some(_), _) => "capath",
            (None, Some(_)) => "cafile",
            (None, None) => "require_certificate",
        };
        return Err(err(
            option,
            "require_certificate needs CA certificates (cafile or capath)",
        ));
    }
    Ok(roots)
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, SettingsError> {
    let crls: Vec<_> = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err("crlfile", format!("{}: {e}", path.display())))?;
    if crls.is_empty() {
        return Err(err("crlfile", format!("{}: no CRL in it", path.display())));
    }
    Ok(crls)
}
