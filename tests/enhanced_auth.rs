//! MQTT 5 enhanced authentication, black box: SCRAM-SHA-256 over CONNECT/AUTH/CONNACK,
//! re-authentication, refusals. The client side is `shardmq::auth::ScramClient`, driven
//! over a raw socket with the project's codec so every packet is checked exactly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Broker, WAIT};
use shardmq::auth::{scram_entry, ScramClient, SCRAM_SHA_256};
use shardmq::protocol::{
    self, Auth, ConnAck, Connect, Decoded, Packet, Properties, ReasonCode, Version,
};

/// A credentials file with alice/wonderland and bob/builder, removed on drop.
struct Creds(PathBuf);

impl Creds {
    fn new(tag: &str) -> Creds {
        let path = std::env::temp_dir().join(format!("shardmq-scram-{tag}-{}", std::process::id()));
        let mut text = String::from("# test users\n");
        for (u, p) in [("alice", "wonderland"), ("bob", "builder")] {
            text.push_str(&scram_entry(u, p, 4096).expect("entry"));
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write credentials");
        Creds(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for Creds {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the tests read back: the packet kind, its reason, its authentication data.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    ConnAck(ReasonCode, Option<Vec<u8>>),
    Auth(ReasonCode, Option<Vec<u8>>),
    Disconnect(ReasonCode),
    Other(&'static str),
    Closed,
}

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    version: Version,
}

impl Raw {
    fn connect(b: &Broker) -> Raw {
        let s = TcpStream::connect(b.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Raw {
            s,
            buf: Vec::new(),
            version: Version::V5,
        }
    }

    fn send(&mut self, p: &Packet<'_>) {
        let mut out = Vec::new();
        protocol::encode(p, self.version, &mut out);
        self.s.write_all(&out).expect("write");
    }

    fn send_connect(&mut self, id: &str, method: Option<&str>, data: Option<&[u8]>) {
        self.send(&Packet::Connect(Connect {
            version: self.version,
            clean_start: true,
            keep_alive: 30,
            client_id: id,
            will: None,
            username: None,
            password: None,
            properties: Properties {
                authentication_method: method,
                authentication_data: data,
                ..Properties::default()
            },
        }));
    }

    fn send_auth(&mut self, reason: ReasonCode, data: &[u8]) {
        self.send(&Packet::Auth(Auth {
            reason,
            properties: Properties {
                authentication_method: Some(SCRAM_SHA_256),
                authentication_data: Some(data),
                ..Properties::default()
            },
        }));
    }

    /// The next packet, bounded by `WAIT`; `Closed` on EOF.
    fn next(&mut self) -> Reply {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Decoded::Packet { packet, len }) =
                protocol::decode(&self.buf, self.version, usize::MAX)
            {
                let r = summarize(&packet);
                self.buf.drain(..len);
                return r;
            }
            assert!(Instant::now() < deadline, "no packet within {WAIT:?}");
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Reply::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Reply::Closed,
            }
        }
    }
}

fn summarize(p: &Packet<'_>) -> Reply {
    match p {
        Packet::ConnAck(ConnAck {
            reason, properties, ..
        }) => Reply::ConnAck(*reason, properties.authentication_data.map(<[u8]>::to_vec)),
        Packet::Auth(a) => Reply::Auth(
            a.reason,
            a.properties.authentication_data.map(<[u8]>::to_vec),
        ),
        Packet::Disconnect(d) => Reply::Disconnect(d.reason),
        other => Reply::Other(other.name()),
    }
}

/// Run the full SCRAM exchange; returns the client and the raw connection after CONNACK.
fn login(b: &Broker, id: &str, user: &str, password: &str) -> (Raw, Reply) {
    let mut c = Raw::connect(b);
    let (mut client, first) = ScramClient::new(user, password).expect("client-first");
    c.send_connect(id, Some(SCRAM_SHA_256), Some(&first));
    let Reply::Auth(ReasonCode::ContinueAuthentication, Some(server_first)) = c.next() else {
        panic!("expected AUTH 0x18 with server-first");
    };
    let last = client
        .handle_server_first(&server_first)
        .expect("client-final");
    c.send_auth(ReasonCode::ContinueAuthentication, &last);
    let reply = c.next();
    if let Reply::ConnAck(ReasonCode::Success, Some(server_final)) = &reply {
        client
            .verify_server_final(server_final)
            .expect("server proves it knows the key");
    }
    (c, reply)
}

#[test]
fn scram_login_succeeds_and_the_server_proves_itself() {
    let creds = Creds::new("ok");
    let b = Broker::start(&["--scram-credentials", creds.arg()]);
    let (mut c, reply) = login(&b, "scram-ok", "alice", "wonderland");
    assert!(
        matches!(reply, Reply::ConnAck(ReasonCode::Success, Some(_))),
        "{reply:?}"
    );
    // The connection is usable afterwards.
    c.send(&Packet::PingReq);
    assert_eq!(c.next(), Reply::Other("PINGRESP"));
}

#[test]
fn wrong_password_and_unknown_user_get_0x86_and_close() {
    let creds = Creds::new("bad");
    let b = Broker::start(&["--scram-credentials", creds.arg()]);
    for (user, password) in [("alice", "looking-glass"), ("mallory", "wonderland")] {
        let (mut c, reply) = login(&b, "scram-bad", user, password);
        assert_eq!(
            reply,
            Reply::ConnAck(ReasonCode::BadUserNameOrPassword, None),
            "{user}"
        );
        assert_eq!(
            c.next(),
            Reply::Closed,
            "{user}: a refused CONNECT is closed"
        );
    }
}

#[test]
fn unknown_method_gets_0x8c() {
    let creds = Creds::new("method");
    let b = Broker::start(&["--scram-credentials", creds.arg()]);
    let mut c = Raw::connect(&b);
    c.send_connect(
        "scram-method",
        Some("SCRAM-SHA-1"),
        Some(b"n,,n=alice,r=abc"),
    );
    assert_eq!(
        c.next(),
        Reply::ConnAck(ReasonCode::BadAuthenticationMethod, None)
    );
    assert_eq!(c.next(), Reply::Closed);
}

#[test]
fn anonymous_clients_are_refused_once_credentials_are_configured() {
    let creds = Creds::new("anon");
    let b = Broker::start(&["--scram-credentials", creds.arg()]);
    let mut v5 = Raw::connect(&b);
    v5.send_connect("anon-5", None, None);
    assert_eq!(v5.next(), Reply::ConnAck(ReasonCode::NotAuthorized, None));
    assert_eq!(v5.next(), Reply::Closed);
    let mut v3 = Raw::connect(&b);
    v3.version = Version::V3_1_1;
    v3.send_connect("anon-3", None, None);
    // 3.x return code 5 maps back to Not Authorized.
    assert_eq!(v3.next(), Reply::ConnAck(ReasonCode::NotAuthorized, None));
    assert_eq!(v3.next(), Reply::Closed);
}

#[test]
fn anonymous_clients_may_be_allowed_explicitly() {
    let creds = Creds::new("allow");
    let b = Broker::start(&[
        "--scram-credentials",
        creds.arg(),
        "--allow-anonymous",
        "true",
    ]);
    let mut c = Raw::connect(&b);
    c.send_connect("anon-ok", None, None);
    assert_eq!(c.next(), Reply::ConnAck(ReasonCode::Success, None));
}

#[test]
fn only_auth_may_follow_a_connect_that_started_authentication() {
    let creds = Creds::new("seq");
    let b = Broker::start(&["--scram-credentials", creds.arg()]);
    let mut c = Raw::connect(&b);
    let (_client, first) = ScramClient::new("alice", "wonderland").expect("client-first");
    c.send_connect("scram-seq", Some(SCRAM_SHA_256), Some(&first));
    assert!(matches!(
        c.next(),
        Reply::Auth(ReasonCode::ContinueAuthentication, Some(_))
    ));
    c.send(&Packet::PingReq);
    assert_eq!(
        c.next(),
        Reply::Closed,
        "PINGREQ before the exchange ends is a protocol error"
    );
}

#[test]
fn re_authentication_as_the_same_user_succeeds_and_as_another_fails() {
    let creds = Creds::new("reauth");
    let b = Broker::start(&["--scram-credentials", creds.arg()]);
    let (mut c, reply) = login(&b, "scram-re", "alice", "wonderland");
    assert!(matches!(
        reply,
        Reply::ConnAck(ReasonCode::Success, Some(_))
    ));
    for (user, password, ok) in [("alice", "wonderland", true), ("bob", "builder", false)] {
        let (mut client, first) = ScramClient::new(user, password).expect("client-first");
        c.send_auth(ReasonCode::ReAuthenticate, &first);
        let Reply::Auth(ReasonCode::ContinueAuthentication, Some(server_first)) = c.next() else {
            panic!("expected AUTH 0x18 during re-authentication");
        };
        let last = client
            .handle_server_first(&server_first)
            .expect("client-final");
        c.send_auth(ReasonCode::ContinueAuthentication, &last);
        if ok {
            let Reply::Auth(ReasonCode::Success, Some(server_final)) = c.next() else {
                panic!("expected AUTH 0x00 ending the re-authentication");
            };
            client
                .verify_server_final(&server_final)
                .expect("server-final");
        } else {
            assert_eq!(c.next(), Reply::Disconnect(ReasonCode::NotAuthorized));
            assert_eq!(c.next(), Reply::Closed);
        }
    }
}
