//! Listener blocks: options land on the right listener, problems name file:line, TLS files
//! are loaded, and every listener option is accepted at start.

use std::path::PathBuf;

use clap::Parser;

use super::*;
use crate::config::{file, Args, Config};

/// A directory with a certificate, its key and a CA file, removed at the end.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("shardmq-lst-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("cert");
        std::fs::write(dir.join("c.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).expect("write");
        Files { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    fn conf(&self, text: &str) -> String {
        let p = self.dir.join("m.conf");
        std::fs::write(&p, text.replace("$D", &self.dir.display().to_string())).expect("write");
        p.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn validate_text(text: &str) -> Result<Vec<Listener>, String> {
    let f = file::parse(text, "m.conf").map_err(|e| e.to_string())?;
    f.listeners
        .iter()
        .map(|s| s.validate("m.conf", 1 << 20))
        .collect()
}

#[test]
fn options_attach_to_the_listener_above_them() {
    let f = file::parse(
        "listener 1883 127.0.0.1\nmax_connections 10\n\nlistener 8080\nprotocol websockets\nwebsockets_path /mqtt\nsocket_domain ipv6\nmount_point site/\nenable_proxy_protocol 2\n",
        "m.conf",
    )
    .expect("valid");
    assert_eq!(f.listeners.len(), 2);
    let (a, b) = (&f.listeners[0], &f.listeners[1]);
    assert_eq!(
        (a.line, a.max_connections, a.protocol),
        (1, Some(10), Protocol::Mqtt)
    );
    assert_eq!(
        (b.line, b.protocol, b.proxy),
        (4, Protocol::WebSockets, Some(ProxyVersion::V2))
    );
    let l = b.validate("m.conf", 1000).expect("valid");
    assert_eq!(l.addr, "[::]:8080".parse().expect("addr"));
    assert_eq!(l.mount_point.as_deref(), Some("site/"));
    let ws = l.ws.clone().expect("websocket settings");
    assert_eq!(
        (ws.path.as_deref(), ws.frame_bytes_max),
        (Some("/mqtt"), 1000)
    );
    let plain = a.validate("m.conf", 1000).expect("valid");
    assert_eq!(plain.max_connections, Some(10));
}

/// Behind a TLS-terminating proxy (PROXY v2, no `certfile`), `require_certificate` and
/// `use_identity_as_username` apply to the certificate the header describes.
#[test]
fn proxy_v2_listener_takes_the_client_certificate_from_the_header() {
    let text = "listener 1\nenable_proxy_protocol 2\nrequire_certificate true\nuse_identity_as_username true\nlistener 2\nenable_proxy_protocol 2\n";
    let ls = validate_text(text).expect("valid");
    assert!(ls[0].tls.is_none());
    assert!(ls[0].proxy_requires_cert);
    assert_eq!(ls[0].cert_username, CertUsername::Cn);
    assert!(!ls[1].proxy_requires_cert);
}

#[test]
fn problems_name_the_file_and_line_of_the_option() {
    let cases: &[(&str, &str)] = &[
        ("listener 1\nprotocol mqtts\n", "m.conf:2: protocol: expected mqtt or websockets, got 'mqtts'"),
        ("listener 1\ntls_version tlsv1.1\n", "m.conf:2: tls_version tlsv1.1 is refused: TLS before 1.2 is broken; use tlsv1.2 or tlsv1.3"),
        ("listener 1\n\ncertfile c.pem\n", "m.conf:3: certfile needs keyfile"),
        ("listener 1\nkeyfile k.pem\n", "m.conf:2: keyfile needs certfile"),
        ("listener 1\nrequire_certificate true\n", "m.conf:2: require_certificate needs certfile and keyfile (TLS)"),
        ("listener 1\nciphers HIGH\n", "m.conf:2: ciphers needs certfile and keyfile (TLS)"),
        ("listener 1 127.0.0.1\nsocket_domain ipv6\n", "m.conf:2: socket_domain ipv6 does not match the address 127.0.0.1"),
        ("listener 1\nenable_proxy_protocol 3\n", "m.conf:2: enable_proxy_protocol: expected 1 or 2, got '3'"),
        ("listener 1\nmax_connections -2\n", "m.conf:2: max_connections: expected -1 or a count, got '-2'"),
        ("listener 1\nmount_point a/+/\n", "m.conf:2: mount_point: 'a/+/' contains a wildcard or NUL"),
        ("listener 1\nbind_interface averyveryverylongname\n", "m.conf:2: bind_interface: 'averyveryverylongname' is not an interface name"),
        ("listener 1\nwebsockets_path /mqtt\n", "m.conf:2: websockets_path needs protocol websockets"),
        ("listener 1\nrequire_certificate maybe\n", "m.conf:2: require_certificate: expected true or false, got 'maybe'"),
        ("certfile c.pem\nlistener 1\n", "m.conf:1: 'certfile' must follow a listener line (or port)"),
        ("listener 1\nenable_proxy_protocol 1\nrequire_certificate true\n", "m.conf:3: require_certificate needs certfile and keyfile (TLS)"),
        ("listener 1\nenable_proxy_protocol 2\nrequire_certificate true\nuse_subject_as_username true\n", "m.conf:4: use_subject_as_username needs certfile: a PROXY v2 header carries only the CN"),
    ];
    for (text, want) in cases {
        assert_eq!(
            validate_text(text).map(|_| ()),
            Err(want.to_string()),
            "{text}"
        );
    }
}

#[test]
fn tls_listener_loads_its_files_and_errors_point_at_the_bad_line() {
    let d = Files::new("tls");
    let (c, k) = (d.path("c.pem"), d.path("k.pem"));
    let good = format!("listener 8883\ncertfile {c}\nkeyfile {k}\ncafile {c}\nrequire_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\n");
    let ls = validate_text(&good).expect("valid");
    assert_eq!(ls[0].cert_username, CertUsername::Cn);
    let (opts, _config) = ls[0].tls.as_ref().expect("tls");
    assert_eq!(opts.version, TlsVersion::Tls13);

    let cases = [
        (format!("listener 8883\ncertfile {c}\nkeyfile {k}\nciphers ECDHE-RSA-AES128-GCM-SHA256:NOPE\n"), "m.conf:4: ciphers: unknown or weak cipher suite 'NOPE'"),
        (format!("listener 8883\ncertfile {c}\nkeyfile {c}\n"), "m.conf:3: keyfile: "),
        (format!("listener 8883\ncertfile {k}\nkeyfile {k}\n"), "m.conf:2: certfile: "),
        (format!("listener 8883\ncertfile {c}\nkeyfile {k}\nuse_identity_as_username true\n"), "m.conf:4: use_identity_as_username needs require_certificate true"),
        (format!("listener 8883\ncertfile {c}\nkeyfile {k}\ncafile {c}\nrequire_certificate true\nuse_identity_as_username true\nuse_subject_as_username true\n"), "m.conf:7: use_identity_as_username and use_subject_as_username exclude each other"),
        (format!("listener 8883\ncertfile {c}\nkeyfile {k}\nrequire_certificate true\n"), "m.conf:4: require_certificate: require_certificate needs CA certificates"),
    ];
    for (text, want) in &cases {
        let e = validate_text(text).expect_err(want);
        assert!(e.starts_with(want), "{e} / {want}");
    }
}

#[test]
fn port_line_listener_takes_options_before_any_listener() {
    let f = file::parse(
        "port 8883\ncertfile a\nkeyfile b\nlistener 1884\n",
        "m.conf",
    )
    .expect("valid");
    assert_eq!(f.listeners.len(), 2);
    let port = &f.listeners[1];
    assert_eq!((port.line, port.addr.port()), (1, 8883));
    assert_eq!(port.files.certfile, Some(PathBuf::from("a")));
    assert_eq!(f.listeners[0].files.certfile, None);
}

#[test]
fn every_listener_option_is_served() {
    let d = Files::new("served");
    let conf = d.conf(
        "listener 1883 127.0.0.1\n\nlistener 8883 127.0.0.1\ncertfile $D/c.pem\nkeyfile $D/k.pem\nmount_point site/\nmax_connections 5\nenable_proxy_protocol 2\n",
    );
    let c = Config::from_args(Args::parse_from(["shardmq", "-c", &conf])).expect("served");
    let l = &c.listeners[1];
    assert!(l.tls.is_some());
    assert_eq!(
        (l.mount_point.as_deref(), l.max_connections),
        (Some("site/"), Some(5))
    );
    let c = Config::from_args(Args::parse_from([
        "shardmq",
        "--bind",
        "127.0.0.1:0",
        "--websocket",
    ]))
    .expect("websockets served");
    assert!(c.listeners[0].ws.is_some());
    let bad_cert = Args::parse_from([
        "shardmq",
        "--tls-cert",
        &d.path("k.pem"),
        "--tls-key",
        &d.path("k.pem"),
    ]);
    let e = Config::from_args(bad_cert).expect_err("not a certificate");
    assert!(e.starts_with("certfile: "), "{e}");
}

#[test]
fn default_listener_and_dash_p() {
    let c = Config::from_args(Args::parse_from(["shardmq", "-p", "1999"])).expect("valid");
    let both = vec![
        SocketAddr::from(([127, 0, 0, 1], 1999)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1999)),
    ];
    assert_eq!(c.binds, both);
    assert_eq!(c.listeners.len(), 2);
    // Only the IPv6 loopback of the default listener may be missing at bind time.
    assert_eq!(
        (c.listeners[0].optional, c.listeners[1].optional),
        (false, true)
    );
    let bound = Config::from_args(Args::parse_from(["shardmq", "--bind", "[::1]:0"]));
    assert!(!bound.expect("valid").listeners[0].optional);
    let e = Config::from_args(Args::parse_from([
        "shardmq",
        "-p",
        "1999",
        "--bind",
        "127.0.0.1:1",
    ]));
    assert!(e.is_err());
    let d = Files::new("dashp");
    let conf = d.conf("listener 1884 127.0.0.1\n");
    let e = Config::from_args(Args::parse_from(["shardmq", "-c", &conf, "-p", "1"]));
    assert!(e.is_err_and(|e| e.contains("command-line listener")));
    assert!(DEFAULT_ADDRESSES
        .iter()
        .any(|a| a.is_ipv6() && a.is_loopback()));
}
