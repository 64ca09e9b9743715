//! The test PKI: certificate authorities and the certificates they sign, made with rcgen
//! in memory, as PEM (and DER for in-memory TLS clients).
//!
//! Owns: the one way the tests make certificates. It is shared by the black-box tests
//! (`tests/common`, as `common::pki`) and by the TLS unit tests, which include this file
//! by path (`src/transport/tls/tests.rs`), so it depends on nothing but rcgen and rustls.
//! Invariant: every call makes fresh keys; nothing is written to disk here (each test
//! writes what it needs where it wants). Must not touch: files, processes, the broker.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::CertificateDer;

/// A CA that can sign: its certificate (PEM) and its issuer.
pub struct Ca {
    /// Signs leaves (and CRLs).
    pub issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A CA named `name` (its CN), allowed to sign certificates and CRLs.
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).expect("ca cert");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A certificate and its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub pem: String,
    /// Its private key, PEM.
    pub key: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
}

/// What a leaf says about itself; `LeafSpec::cn("x")` is a bare certificate named `x`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeafSpec<'a> {
    /// Common Name.
    pub cn: &'a str,
    /// Organization Name, placed before the CN (none when `None`).
    pub org: Option<&'a str>,
    /// Subject Alternative Names (DNS names or IP addresses).
    pub san: &'a [&'a str],
    /// Serial number (rcgen's random one when `None`).
    pub serial: Option<u8>,
    /// Valid only in 2001: expired.
    pub expired: bool,
    /// Extended key usage: `Some(true)` server, `Some(false)` client, `None` unset.
    pub server: Option<bool>,
}

impl<'a> LeafSpec<'a> {
    /// A certificate with only this CN.
    pub fn cn(cn: &'a str) -> LeafSpec<'a> {
        LeafSpec {
            cn,
            ..LeafSpec::default()
        }
    }
}

/// A leaf made to `spec`, signed by `ca`, or self-signed with `None`.
pub fn leaf(ca: Option<&Ca>, spec: &LeafSpec<'_>) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let san: Vec<String> = spec.san.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(san).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(org) = spec.org {
        p.distinguished_name.push(DnType::OrganizationName, org);
    }
    p.distinguished_name.push(DnType::CommonName, spec.cn);
    if let Some(serial) = spec.serial {
        p.serial_number = Some(SerialNumber::from(vec![serial]));
    }
    if let Some(server) = spec.server {
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
    }
    if spec.expired {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    }
    let cert = match ca {
        Some(ca) => p.signed_by(&key, &ca.issuer).expect("sign"),
        None => p.self_signed(&key).expect("self-sign"),
    };
    Leaf {
        pem: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().clone(),
    }
}
