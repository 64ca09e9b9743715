//! MQTT 5 server redirection (§4.11), black box: with `--redirect`, every CONNECT is
//! answered with Use another server (0x9C) or Server moved (0x9D) naming the other server,
//! and the connection is closed; 3.x clients, which have no such code, get "server
//! unavailable" (return code 3).

mod common;
mod v5;

use common::{Broker, RawClient, WAIT};
use v5::{Client5, Conn5};

#[test]
fn temporary_redirect_names_the_other_server() {
    let b = Broker::start(&["--redirect", "other.example:1883"]);
    let (mut c, ack) = Client5::handshake(b.addr(), &Conn5::new("redirected-5"));
    assert_eq!(ack.reason, 0x9C);
    assert_eq!(
        ack.props.server_reference.as_deref(),
        Some("other.example:1883")
    );
    assert!(!ack.present);
    c.wait_closed(WAIT);
}

#[test]
fn permanent_redirect_uses_server_moved() {
    let b = Broker::start(&["--redirect", "new.example:8883", "--redirect-permanent"]);
    let (mut c, ack) = Client5::handshake(b.addr(), &Conn5::new("moved-5"));
    assert_eq!(ack.reason, 0x9D);
    assert_eq!(
        ack.props.server_reference.as_deref(),
        Some("new.example:8883")
    );
    c.wait_closed(WAIT);
}

#[test]
fn v311_clients_are_told_the_server_is_unavailable() {
    let b = Broker::start(&["--redirect", "other.example:1883"]);
    let (mut c, _present, code) =
        RawClient::handshake(b.addr(), &common::ConnectOpts::v311("redirected-3"));
    assert_eq!(code, 3, "3.x return code 3: server unavailable");
    c.wait_closed(WAIT);
}
