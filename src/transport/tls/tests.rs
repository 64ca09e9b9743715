//! `TlsStream` against a rustls client in memory, with certificates from the test PKI
//! (`tests/common/pki.rs`, rcgen).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{CertificateRevocationListParams, RevokedCertParams, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::CipherSuite;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;

/// One direction of a connection: WouldBlock when empty, as a non-blocking socket.
#[derive(Default)]
struct Wire(VecDeque<u8>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The test PKI shared with the black-box tests (one way to make certificates).
#[path = "../../../tests/common/pki.rs"]
mod pki;

use pki::{ca, Ca, Leaf};

/// A leaf of `ca` with these SANs and serial (O = "Acme, Inc", for the escaping test).
fn leaf(ca: &Ca, cn: &str, san: &[&str], serial: u8, expired: bool) -> Leaf {
    let spec = pki::LeafSpec {
        cn,
        org: Some("Acme, Inc"),
        san,
        serial: Some(serial),
        expired,
        server: None,
    };
    pki::leaf(Some(ca), &spec)
}

fn self_signed(cn: &str) -> Leaf {
    pki::leaf(None, &pki::LeafSpec::cn(cn))
}

/// A directory for one test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("shardmq-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmp dir");
        Dir(d)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server set-up: CA, server certificate, options pointing at the files.
fn setup(dir: &Dir, ca: &Ca) -> TlsOptions {
    let server = leaf(ca, "broker", &["localhost"], 1, false);
    TlsOptions {
        certfile: dir.file("server.pem", &server.pem),
        keyfile: dir.file("server.key", &server.key),
        cafile: Some(dir.file("ca.pem", &ca.pem)),
        ..TlsOptions::default()
    }
}

fn client(
    ca: &Ca,
    cert: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    let ca_der = CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("ca der");
    roots.add(ca_der).expect("root");
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match cert {
        Some(l) => {
            let key = PrivateKeyDer::from_pem_slice(l.key.as_bytes()).expect("key");
            b.with_client_auth_cert(vec![l.der.clone()], key)
                .expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").expect("name");
    ClientConnection::new(Arc::new(cfg), name).expect("client")
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Run the handshake, then send `hello` from the client. Returns the server's plaintext, or
/// the first error either side met (prefixed "server:" or "client:").
fn exchange(c: &mut ClientConnection, s: &mut TlsStream) -> Result<Vec<u8>, String> {
    let (mut c2s, mut s2c) = (Wire::default(), Wire::default());
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    c.writer().write_all(b"hello").expect("queue");
    for _ in 0..20 {
        while c.wants_write() {
            c.write_tls(&mut c2s).map_err(|e| format!("client: {e}"))?;
        }
        loop {
            match s.read(&mut c2s, &mut buf) {
                Ok(0) => return Err("server: eof".into()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("server: {e}")),
            }
        }
        s.write_tls(&mut s2c).or_else(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Ok(0),
            _ => Err(format!("server write: {e}")),
        })?;
        while !s2c.0.is_empty() {
            c.read_tls(&mut s2c).map_err(|e| format!("client: {e}"))?;
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if got.len() >= 5 {
            return Ok(got);
        }
    }
    Err("no progress in 20 rounds".into())
}

#[test]
fn handshake_then_data_both_ways_over_tls13_and_tls12() {
    let dir = Dir::new("basic");
    let ca = ca("test CA");
    let opts = setup(&dir, &ca);
    let cfg = server_config(&opts).expect("config");
    for versions in [BOTH, &[&rustls::version::TLS12][..]] {
        let mut s = TlsStream::new(cfg.clone()).expect("server");
        assert!(s.is_handshaking());
        let mut c = client(&ca, None, versions);
        assert_eq!(exchange(&mut c, &mut s).as_deref(), Ok(&b"hello"[..]));
        assert!(!s.is_handshaking());
        assert_eq!(s.peer_identity(), None);
        assert_eq!(
            c.protocol_version(),
            Some(versions[0].version),
            "the newest version both offer"
        );
        // Server → client through the Read + Write view.
        let mut s2c = Wire::default();
        s.io(&mut s2c).write_all(b"world").expect("write");
        c.read_tls(&mut s2c).expect("read");
        c.process_new_packets().expect("records");
        let mut out = [0u8; 5];
        c.reader().read_exact(&mut out).expect("plaintext");
        assert_eq!(&out, b"world");
        // close_notify: the server sees a clean end.
        c.send_close_notify();
        let mut c2s = Wire::default();
        c.write_tls(&mut c2s).expect("alert");
        assert_eq!(s.read(&mut c2s, &mut [0u8; 16]).expect("end"), 0);
    }
}

#[test]
fn tls13_only_listener_refuses_a_tls12_client() {
    let dir = Dir::new("v13");
    let ca = ca("test CA");
    let opts = TlsOptions {
        version: TlsVersion::Tls13,
        ..setup(&dir, &ca)
    };
    let mut s = TlsStream::new(server_config(&opts).expect("config")).expect("server");
    let mut c = client(&ca, None, &[&rustls::version::TLS12]);
    let e = exchange(&mut c, &mut s).expect_err("refused");
    assert!(e.starts_with("server:"), "{e}");
    assert!(s.wants_write(), "the alert is queued for the socket");
}

#[test]
fn mutual_tls_accepts_the_ca_s_clients_and_refuses_the_rest() {
    let dir = Dir::new("mtls");
    let ca = ca("test CA");
    let other = ca_other();
    let good = leaf(&ca, "device-1", &[], 10, false);
    let revoked = leaf(&ca, "device-2", &[], 11, false);
    let expired = leaf(&ca, "device-3", &[], 12, true);
    let foreign = leaf(&other, "device-1", &[], 10, false);
    let lone = self_signed("device-1");
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(vec![11]),
            revocation_time: rcgen::date_time_ymd(2020, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .expect("crl");
    let opts = TlsOptions {
        require_certificate: true,
        crlfile: Some(dir.file("crl.pem", &crl.pem().expect("crl pem"))),
        ..setup(&dir, &ca)
    };
    let cfg = server_config(&opts).expect("config");

    let mut s = TlsStream::new(cfg.clone()).expect("server");
    let mut c = client(&ca, Some(&good), BOTH);
    assert_eq!(exchange(&mut c, &mut s).as_deref(), Ok(&b"hello"[..]));
    let id = s.peer_identity().expect("identity");
    assert_eq!(id.cn.as_deref(), Some("device-1"));
    assert_eq!(id.subject, "CN=device-1,O=Acme\\, Inc");

    for (name, cert) in [
        ("missing", None),
        ("revoked", Some(&revoked)),
        ("expired", Some(&expired)),
        ("other CA", Some(&foreign)),
        ("self-signed", Some(&lone)),
    ] {
        let mut s = TlsStream::new(cfg.clone()).expect("server");
        let mut c = client(&ca, cert, BOTH);
        let e = exchange(&mut c, &mut s).expect_err(name);
        assert!(e.starts_with("server:"), "{name}: {e}");
        assert!(s.peer_identity().is_none(), "{name}");
        assert!(s.wants_write(), "{name}: the alert is queued");
    }
}

fn ca_other() -> Ca {
    ca("other CA")
}

#[test]
fn ciphers_map_to_rustls_suites_and_unknown_ones_are_named() {
    let dir = Dir::new("ciphers");
    let ca = ca("test CA");
    let base = setup(&dir, &ca);
    let opts = TlsOptions {
        ciphers: Some("ECDHE-ECDSA-CHACHA20-POLY1305".into()),
        ciphers_tls13: Some("TLS_AES_256_GCM_SHA384".into()),
        ..base.clone()
    };
    let cfg = server_config(&opts).expect("config");
    for (versions, want) in [
        (BOTH, CipherSuite::TLS13_AES_256_GCM_SHA384),
        (
            &[&rustls::version::TLS12][..],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let mut s = TlsStream::new(cfg.clone()).expect("server");
        let mut c = client(&ca, None, versions);
        exchange(&mut c, &mut s).expect("handshake");
        assert_eq!(c.negotiated_cipher_suite().map(|s| s.suite()), Some(want));
    }
    let mosquitto_default = TlsOptions {
        ciphers: Some("DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:@STRENGTH".into()),
        ..base.clone()
    };
    assert!(server_config(&mosquitto_default).is_ok());
    let cases: &[(TlsOptions, &str, &str)] = &[
        (
            TlsOptions {
                ciphers: Some("ECDHE-RSA-AES128-GCM-SHA256:RC4-MD5".into()),
                ..base.clone()
            },
            "ciphers",
            "unknown or weak cipher suite 'RC4-MD5'",
        ),
        (
            TlsOptions {
                ciphers: Some("TLS_AES_128_GCM_SHA256".into()),
                ..base.clone()
            },
            "ciphers",
            "'TLS_AES_128_GCM_SHA256' is not a TLS 1.2 suite",
        ),
        (
            TlsOptions {
                ciphers_tls13: Some("TLS_AES_128_CCM_SHA256".into()),
                ..base.clone()
            },
            "ciphers_tls1.3",
            "unknown or weak cipher suite",
        ),
        (
            TlsOptions {
                ciphers: Some("!HIGH".into()),
                ..base.clone()
            },
            "ciphers",
            "no cipher suite left",
        ),
        (
            TlsOptions {
                keyfile: dir.file("empty.key", ""),
                ..base.clone()
            },
            "keyfile",
            "empty.key",
        ),
        (
            TlsOptions {
                certfile: dir.0.join("absent.pem"),
                ..base.clone()
            },
            "certfile",
            "absent.pem",
        ),
        (
            TlsOptions {
                require_certificate: true,
                cafile: None,
                ..base.clone()
            },
            "require_certificate",
            "needs CA certificates",
        ),
        (
            TlsOptions {
                crlfile: Some(dir.0.join("x.pem")),
                ..base.clone()
            },
            "crlfile",
            "needs require_certificate",
        ),
    ];
    for (o, option, problem) in cases {
        let e = server_config(o).expect_err(problem);
        assert_eq!(e.option, *option, "{e}");
        assert!(e.problem.contains(problem), "{e}");
    }
    assert!(TlsVersion::parse("tlsv1.1").is_err_and(|e| e.contains("refused")));
    assert_eq!(TlsVersion::parse("tlsv1.3"), Ok(TlsVersion::Tls13));
}

#[test]
fn a_mismatched_key_is_refused_and_the_caller_keeps_its_config() {
    let dir = Dir::new("reload");
    let ca = ca("test CA");
    let good = setup(&dir, &ca);
    let old = server_config(&good).expect("config");
    let other = leaf(&ca, "x", &["localhost"], 3, false);
    let bad = TlsOptions {
        keyfile: dir.file("other.key", &other.key),
        ..good
    };
    let e = server_config(&bad).expect_err("key does not match the certificate");
    assert_eq!(e.option, "keyfile");
    assert!(TlsStream::new(old).is_ok());
}

#[test]
fn plain_mqtt_to_a_tls_listener_is_a_tls_error() {
    let dir = Dir::new("plain");
    let ca = ca("test CA");
    let mut s = TlsStream::new(server_config(&setup(&dir, &ca)).expect("config")).expect("server");
    let mut wire = Wire::default();
    wire.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .expect("write");
    let e = s.read(&mut wire, &mut [0u8; 64]).expect_err("not TLS");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(s.is_handshaking());
}

#[test]
fn subject_escapes_follow_rfc2253() {
    assert_eq!(rfc2253_escape("a,b+c"), "a\\,b\\+c");
    assert_eq!(rfc2253_escape(" x "), "\\ x\\ ");
    assert_eq!(rfc2253_escape("#1"), "\\#1");
    assert_eq!(identity_of(b"not a certificate"), None);
}

#[test]
fn bytes_read_before_the_stream_existed_are_fed_in() {
    let dir = Dir::new("feed");
    let ca = ca("test CA");
    let cfg = server_config(&setup(&dir, &ca)).expect("config");
    let mut s = TlsStream::new(cfg).expect("server");
    let mut c = client(&ca, None, BOTH);
    // The ClientHello arrived behind a PROXY header and was read with it.
    let mut hello = Vec::new();
    c.write_tls(&mut hello).expect("client hello");
    s.feed(&hello).expect("fed");
    assert!(s.wants_write(), "the ServerHello is ready");
    assert_eq!(exchange(&mut c, &mut s).as_deref(), Ok(&b"hello"[..]));
    assert_eq!(
        s.feed(b"x").map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
}

#[test]
fn a_client_hello_one_byte_at_a_time_waits_without_spinning() {
    let dir = Dir::new("slow");
    let ca = ca("test CA");
    let mut s = TlsStream::new(server_config(&setup(&dir, &ca)).expect("config")).expect("server");
    let mut c = client(&ca, None, BOTH);
    let mut hello = Vec::new();
    c.write_tls(&mut hello).expect("client hello");
    let mut wire = Wire::default();
    for (i, b) in hello.iter().enumerate() {
        wire.0.push_back(*b);
        // Each readable edge costs one pass: the byte is taken, then WouldBlock.
        let e = s
            .read(&mut wire, &mut [0u8; 64])
            .expect_err("nothing to hand out");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "byte {i}");
        assert!(wire.0.is_empty());
        assert!(
            s.is_handshaking(),
            "byte {i}: the caller's timer still decides"
        );
        assert_eq!(s.wants_write(), i + 1 == hello.len(), "byte {i}");
    }
}

/// Both directions of a socket in memory.
#[derive(Default)]
struct Duplex {
    rx: Wire,
    tx: Wire,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rx.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn websocket_over_tls_stacks_the_two_views() {
    use crate::transport::ws::{WsConfig, WsFramer};
    let dir = Dir::new("wss");
    let ca = ca("test CA");
    let mut tls = TlsStream::new(server_config(&setup(&dir, &ca)).expect("config")).expect("tls");
    let mut ws = WsFramer::new(WsConfig::default());
    let mut c = client(&ca, None, BOTH);
    let upgrade = b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
    c.writer().write_all(upgrade).expect("queue");
    // A masked binary frame (mask 1,2,3,4) carrying PINGREQ (0xc0 0x00).
    c.writer()
        .write_all(&[0x82, 0x82, 1, 2, 3, 4, 0xc0 ^ 1, 2])
        .expect("queue");
    let mut sock = Duplex::default();
    let mut scratch = [0u8; 4096];
    let mut mqtt = Vec::new();
    let mut from_server = Vec::new();
    for _ in 0..10 {
        while c.wants_write() {
            c.write_tls(&mut sock.rx).expect("client out");
        }
        match ws.io(&mut tls.io(&mut sock)).read(&mut scratch) {
            Ok(n) => mqtt.extend_from_slice(&scratch[..n]),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}"),
        }
        let _ = tls.write_tls(&mut sock);
        while !sock.tx.0.is_empty() {
            c.read_tls(&mut sock.tx).expect("client in");
            c.process_new_packets().expect("records");
        }
        let _ = c.reader().read_to_end(&mut from_server);
        if !mqtt.is_empty() {
            break;
        }
    }
    assert_eq!(mqtt, [0xc0, 0x00]);
    assert!(from_server.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    from_server.clear();
    ws.io(&mut tls.io(&mut sock))
        .write_all(&[0xd0, 0x00])
        .expect("PINGRESP");
    c.read_tls(&mut sock.tx).expect("client in");
    c.process_new_packets().expect("records");
    let _ = c.reader().read_to_end(&mut from_server);
    assert_eq!(from_server, [0x82, 0x02, 0xd0, 0x00]);
}

/// A socket whose buffers are full both ways.
struct Choked;

impl Read for Choked {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Choked {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writes_are_refused_while_earlier_ciphertext_waits_for_the_socket() {
    let dir = Dir::new("choked");
    let ca = ca("test CA");
    let mut s = TlsStream::new(server_config(&setup(&dir, &ca)).expect("config")).expect("server");
    let mut c = client(&ca, None, BOTH);
    exchange(&mut c, &mut s).expect("handshake");
    let _ = s.send_pending(&mut Wire::default());
    assert!(!s.wants_write());
    assert_eq!(s.io(&mut Choked).write(b"abc").expect("taken"), 3);
    assert!(s.wants_write());
    let e = s.io(&mut Choked).write(b"def").expect_err("refused");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(!s.send_pending(&mut Choked).expect("full"));
    let mut out = Wire::default();
    assert!(s.send_pending(&mut out).expect("drained"));
    c.read_tls(&mut out).expect("in");
    c.process_new_packets().expect("records");
    let mut got = [0u8; 3];
    c.reader().read_exact(&mut got).expect("plaintext");
    assert_eq!(&got, b"abc");
}

/// A socket that hands out at most `chunk` bytes per read.
struct Trickle {
    wire: Wire,
    chunk: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.wire.read(&mut buf[..n])
    }
}

/// Read everything the server can decrypt now, `out_len` bytes at a time.
fn drain(s: &mut TlsStream, sock: &mut impl Read, out_len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut out = vec![0u8; out_len];
    loop {
        match s.read(sock, &mut out) {
            Ok(0) => panic!("unexpected end"),
            Ok(n) => got.extend_from_slice(&out[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn assert_idle(s: &TlsStream) {
    assert_eq!(
        (s.rx.capacity(), s.plain.capacity(), s.tx.capacity()),
        (0, 0, 0),
        "an idle stream keeps no buffer"
    );
}

#[test]
fn an_idle_stream_keeps_no_buffer() {
    let dir = Dir::new("idle");
    let ca = ca("test CA");
    let cfg = server_config(&setup(&dir, &ca)).expect("config");
    for versions in [BOTH, &[&rustls::version::TLS12][..]] {
        let mut s = TlsStream::new(cfg.clone()).expect("server");
        let mut c = client(&ca, None, versions);
        exchange(&mut c, &mut s).expect("handshake");
        assert!(s.send_pending(&mut Wire::default()).expect("flushed"));
        assert_idle(&s);
        let mut s2c = Wire::default();
        s.io(&mut s2c).write_all(b"world").expect("write");
        assert_idle(&s);
    }
}

#[test]
fn records_split_anywhere_and_read_into_small_buffers_arrive_whole() {
    let dir = Dir::new("split");
    let ca = ca("test CA");
    let cfg = server_config(&setup(&dir, &ca)).expect("config");
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    for (chunk, out_len) in [
        (1, 7),
        (5, 64 * 1024),
        (1000, 3),
        (16_000, 64 * 1024),
        (usize::MAX, 5),
    ] {
        let mut s = TlsStream::new(cfg.clone()).expect("server");
        let mut c = client(&ca, None, BOTH);
        exchange(&mut c, &mut s).expect("handshake");
        c.writer().write_all(&payload).expect("queue");
        let mut sock = Trickle {
            wire: Wire::default(),
            chunk,
        };
        while c.wants_write() {
            c.write_tls(&mut sock.wire).expect("client out");
        }
        let got = drain(&mut s, &mut sock, out_len);
        assert!(
            got == payload,
            "chunk {chunk}, buffer {out_len}: {} bytes",
            got.len()
        );
        assert_idle(&s);
    }
}

#[test]
fn key_updates_are_answered_and_data_flows_on_both_sides() {
    let dir = Dir::new("keyupdate");
    let ca = ca("test CA");
    let mut s = TlsStream::new(server_config(&setup(&dir, &ca)).expect("config")).expect("server");
    let mut c = client(&ca, None, &[&rustls::version::TLS13]);
    exchange(&mut c, &mut s).expect("handshake");
    assert!(s.send_pending(&mut Wire::default()).expect("flushed"));
    for round in 0..3 {
        c.refresh_traffic_keys().expect("key update");
        c.writer().write_all(b"after").expect("queue");
        let mut c2s = Wire::default();
        while c.wants_write() {
            c.write_tls(&mut c2s).expect("client out");
        }
        assert_eq!(drain(&mut s, &mut c2s, 4096), b"after", "round {round}");
        let mut s2c = Wire::default();
        s.io(&mut s2c).write_all(b"back").expect("write");
        // rustls answers a key update ahead of its next data: two records, not one.
        assert!(
            s2c.0.len() >= 2 * 22,
            "round {round}: {} bytes",
            s2c.0.len()
        );
        c.read_tls(&mut s2c).expect("client in");
        c.process_new_packets().expect("records");
        let mut back = [0u8; 4];
        c.reader().read_exact(&mut back).expect("plaintext");
        assert_eq!(&back, b"back", "round {round}");
        assert_idle(&s);
    }
}
