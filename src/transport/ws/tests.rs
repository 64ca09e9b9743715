//! The framer against tungstenite's client, in memory, plus literal-byte frames.

use std::io::{self, Read, Write};

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::Role;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

use super::*;

/// One side of an in-memory connection: reads what was pushed, WouldBlock when empty.
#[derive(Default)]
struct Pipe {
    inbound: Vec<u8>,
    read_at: usize,
    outbound: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.inbound[self.read_at..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read_at += n;
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Move the server's output into the client's pipe.
fn deliver(server: &mut WsFramer, pipe: &mut Pipe) {
    let out = server.output().to_vec();
    server.consume_output(out.len());
    pipe.inbound.extend_from_slice(&out);
}

/// A tungstenite client upgraded against `server`, with what the server received so far.
fn connect(server: &mut WsFramer, protocols: &[&str]) -> (WebSocket<Pipe>, Vec<u8>) {
    let mut req = ClientRequestBuilder::new("ws://localhost/mqtt".parse().expect("uri"));
    for p in protocols {
        req = req.with_sub_protocol(*p);
    }
    let mut rx = Vec::new();
    let mut mid = match tungstenite::client::client(req, Pipe::default()) {
        Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
        other => panic!("the client should wait for the answer: {:?}", other.is_ok()),
    };
    let sent = std::mem::take(&mut mid.get_mut().get_mut().outbound);
    server.feed(&sent, &mut rx).expect("upgrade accepted");
    assert_eq!(server.phase(), Phase::Open);
    deliver(server, mid.get_mut().get_mut());
    let (ws, resp) = mid.handshake().expect("client accepts the 101");
    assert_eq!(resp.status(), 101);
    (ws, rx)
}

/// Everything the client wrote since last time.
fn take_sent(ws: &mut WebSocket<Pipe>) -> Vec<u8> {
    ws.flush().expect("flush");
    std::mem::take(&mut ws.get_mut().outbound)
}

#[test]
fn upgrade_agrees_on_mqtt_and_frames_flow_both_ways() {
    let mut server = WsFramer::new(WsConfig::default());
    let (mut client, mut rx) = connect(&mut server, &["mqtt"]);
    assert_eq!(server.subprotocol(), Some("mqtt"));
    assert!(rx.is_empty());
    client
        .send(Message::Binary(vec![0x10, 2, 0, 0].into()))
        .expect("send");
    let bytes = take_sent(&mut client);
    // Fed one byte at a time: headers and masks split anywhere.
    for b in &bytes {
        server
            .feed(std::slice::from_ref(b), &mut rx)
            .expect("frame");
    }
    assert_eq!(rx, [0x10, 2, 0, 0]);
    server.send(&[0x20, 2, 0, 0]).expect("open");
    deliver(&mut server, client.get_mut());
    match client.read().expect("a frame") {
        Message::Binary(b) => assert_eq!(&b[..], [0x20, 2, 0, 0]),
        m => panic!("{m:?}"),
    }
}

#[test]
fn mqttv31_is_accepted_and_other_subprotocols_refused() {
    let mut server = WsFramer::new(WsConfig::default());
    let _ = connect(&mut server, &["mqttv3.1"]);
    assert_eq!(server.subprotocol(), Some("mqttv3.1"));
    let mut server = WsFramer::new(WsConfig::default());
    let req = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
    let e = server.feed(req, &mut Vec::new()).expect_err("chat");
    assert_eq!(e, WsError::Handshake("no MQTT subprotocol offered"));
    assert!(server.output().starts_with(b"HTTP/1.1 400 "));
    assert_eq!(server.phase(), Phase::Closed);
}

#[test]
fn fragmented_binary_message_is_reassembled_with_pings_between() {
    let mut server = WsFramer::new(WsConfig::default());
    let (mut client, mut rx) = connect(&mut server, &["mqtt"]);
    let frames = [
        Frame::message(vec![0x30, 7], OpCode::Data(Data::Binary), false),
        Frame::ping(vec![1, 2, 3]),
        Frame::message(vec![0, 1, b't'], OpCode::Data(Data::Continue), false),
        Frame::message(vec![], OpCode::Data(Data::Continue), false),
        Frame::message(vec![b'h', b'i', b'!'], OpCode::Data(Data::Continue), true),
    ];
    for f in frames {
        client.write(Message::Frame(f)).expect("write");
    }
    let bytes = take_sent(&mut client);
    let (a, b) = bytes.split_at(7);
    server.feed(a, &mut rx).expect("part 1");
    server.feed(b, &mut rx).expect("part 2");
    assert_eq!(rx, [0x30, 7, 0, 1, b't', b'h', b'i', b'!']);
    deliver(&mut server, client.get_mut());
    match client.read().expect("pong") {
        Message::Pong(p) => assert_eq!(&p[..], [1, 2, 3]),
        m => panic!("{m:?}"),
    }
}

#[test]
fn oversize_frame_is_refused_from_its_header() {
    let cfg = WsConfig {
        frame_bytes_max: 1000,
        ..WsConfig::default()
    };
    let mut server = WsFramer::new(cfg);
    let (_client, mut rx) = connect(&mut server, &["mqtt"]);
    // Binary, FIN, masked, 64-bit length 1 GiB: only the 14 header bytes arrive.
    let head = [0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(server.feed(&head, &mut rx), Err(WsError::TooLarge));
    assert!(rx.is_empty());
    // Close 1009 (message too big), unmasked.
    assert_eq!(server.output(), [0x88, 2, 0x03, 0xf1]);
    assert_eq!(server.phase(), Phase::Closed);
    assert_eq!(server.feed(b"more", &mut rx), Ok(()));
    assert!(rx.is_empty());
}

#[test]
fn oversize_upgrade_request_is_refused_with_431() {
    let cfg = WsConfig {
        handshake_bytes_max: 64,
        ..WsConfig::default()
    };
    let mut server = WsFramer::new(cfg);
    let mut rx = Vec::new();
    server
        .feed(b"GET /mqtt HTTP/1.1\r\n", &mut rx)
        .expect("so far");
    let e = server.feed(&[b'a'; 100], &mut rx).expect_err("too big");
    assert_eq!(e, WsError::TooLarge);
    assert!(server.output().starts_with(b"HTTP/1.1 431 "));
    assert!(server.request.capacity() <= 64);
}

#[test]
fn close_is_echoed() {
    let mut server = WsFramer::new(WsConfig::default());
    let (mut client, mut rx) = connect(&mut server, &["mqtt"]);
    client.close(None).expect("close");
    let bytes = take_sent(&mut client);
    server.feed(&bytes, &mut rx).expect("close frame");
    assert_eq!(server.phase(), Phase::Closed);
    assert_eq!(server.output(), [0x88, 0]);
}

/// Upgrade request for the literal table, then masked frames written out by hand.
const UPGRADE: &[u8] = b"GET /mqtt?x=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

#[test]
fn upgrade_answer_matches_rfc6455_example_and_pipelined_frames_pass() {
    let cfg = WsConfig {
        path: Some("/mqtt".into()),
        ..WsConfig::default()
    };
    let mut server = WsFramer::new(cfg);
    let mut rx = Vec::new();
    // A masked binary frame with mask 0: payload as is, right behind the request.
    let input = [UPGRADE, &[0x82, 0x82, 0, 0, 0, 0, 0xc0, 0x00]].concat();
    server.feed(&input, &mut rx).expect("upgrade");
    let answer = String::from_utf8_lossy(server.output()).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(answer.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    assert_eq!(rx, [0xc0, 0x00]);
}

#[test]
fn malformed_table() {
    let open = || {
        let mut s = WsFramer::new(WsConfig::default());
        s.feed(UPGRADE, &mut Vec::new()).expect("upgrade");
        s.consume_output(s.output().len());
        s
    };
    let p = WsError::Protocol;
    let cases: &[(&[u8], WsError, u16)] = &[
        (
            &[0x82, 0x02, 0xc0, 0x00],
            p("client frame not masked"),
            1002,
        ),
        (
            &[0x81, 0x80, 0, 0, 0, 0],
            p("text frames are not MQTT"),
            1002,
        ),
        (
            &[0x80, 0x80, 0, 0, 0, 0],
            p("continuation without a message"),
            1002,
        ),
        (&[0xc2, 0x80, 0, 0, 0, 0], p("reserved bits set"), 1002),
        (&[0x83, 0x80, 0, 0, 0, 0], p("reserved opcode"), 1002),
        (&[0x8b, 0x80, 0, 0, 0, 0], p("reserved opcode"), 1002),
        (
            &[0x09, 0x80, 0, 0, 0, 0],
            p("control frame too long or fragmented"),
            1002,
        ),
        (
            &[0x89, 0xfe, 0, 126, 0, 0, 0, 0],
            p("control frame too long or fragmented"),
            1002,
        ),
        (
            &[0x02, 0x80, 0, 0, 0, 0, 0x82, 0x80, 0, 0, 0, 0],
            p("new message inside a fragmented one"),
            1002,
        ),
        (
            &[0x88, 0x81, 0, 0, 0, 0, 3],
            p("close frame of 1 byte"),
            1002,
        ),
    ];
    for (bytes, want, code) in cases {
        let mut s = open();
        let mut rx = Vec::new();
        assert_eq!(s.feed(bytes, &mut rx).as_ref(), Err(want), "{bytes:x?}");
        let mut close = vec![0x88, 2];
        close.extend_from_slice(&code.to_be_bytes());
        assert_eq!(s.output(), close, "{bytes:x?}");
    }
    let bad_requests: &[(&[u8], &str)] = &[
        (b"POST /mqtt HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "HTTP/1.1 400 "),
        (b"\x10\x0c\x00\x04MQTT\r\n\r\n", "HTTP/1.1 400 "),
    ];
    for (req, status) in bad_requests {
        let mut s = WsFramer::new(WsConfig::default());
        assert!(s.feed(req, &mut Vec::new()).is_err());
        assert!(s.output().starts_with(status.as_bytes()));
    }
    let mut s = WsFramer::new(WsConfig {
        path: Some("/ws".into()),
        ..WsConfig::default()
    });
    assert_eq!(
        s.feed(UPGRADE, &mut Vec::new()),
        Err(WsError::Handshake("wrong path"))
    );
    assert!(s.output().starts_with(b"HTTP/1.1 404 "));
}

#[test]
fn masking_is_undone_across_split_points() {
    let payload: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82, 0xfe, 0x01, 0x2c];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    for cut in 0..frame.len() {
        let mut s = WsFramer::new(WsConfig::default());
        s.feed(UPGRADE, &mut Vec::new()).expect("upgrade");
        let mut rx = Vec::new();
        s.feed(&frame[..cut], &mut rx).expect("a");
        s.feed(&frame[cut..], &mut rx).expect("b");
        assert_eq!(rx, payload, "cut {cut}");
    }
    fuzz_feed(&frame);
}

#[test]
fn pings_from_a_client_that_never_reads_are_bounded() {
    let mut s = WsFramer::new(WsConfig::default());
    s.feed(UPGRADE, &mut Vec::new()).expect("upgrade");
    s.consume_output(s.output().len());
    let mut ping = vec![0x89, 0xfd, 0, 0, 0, 0];
    ping.extend_from_slice(&[7; 125]);
    let mut refused = None;
    for i in 0..1000 {
        if let Err(e) = s.feed(&ping, &mut Vec::new()) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("refused before 1000 pings");
    assert_eq!(e, WsError::OutputFull);
    assert!(i * 127 >= OUTPUT_BYTES_MAX - 127, "{i}");
    assert!(s.output().len() <= OUTPUT_BYTES_MAX + 4 + 200);
}

#[test]
fn server_frames_decode_with_tungstenite_as_a_raw_client() {
    let mut out = Vec::new();
    WsFramer::encode_binary(&[9; 70_000], &mut out);
    let mut client = WebSocket::from_raw_socket(Pipe::default(), Role::Client, None);
    client.get_mut().inbound = out;
    match client.read().expect("frame") {
        Message::Binary(b) => assert_eq!(b.len(), 70_000),
        m => panic!("{m:?}"),
    }
    let _ = Control::Ping;
}

#[test]
fn fuzz_seed_reassembles_around_ping_and_close() {
    let seed = include_bytes!("../../../fuzz/corpus/ws/fragments_ping_close");
    let mut s = WsFramer::new(WsConfig::default());
    let mut rx = Vec::new();
    s.feed(UPGRADE, &mut rx).expect("upgrade");
    s.feed(&seed[1..], &mut rx).expect("frames");
    assert_eq!(rx, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
    assert_eq!(s.phase(), Phase::Closed);
    fuzz_feed(seed);
}

/// Client frames (masked) for the differential test: fragments, a ping, an empty
/// continuation, a long frame with a 16-bit length.
fn client_frames() -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let frames: [(u8, Vec<u8>); 5] = [
        (0x02, b"\x30\x0b\x00\x03a/b".to_vec()),
        (0x89, b"ping".to_vec()),
        (0x00, Vec::new()),
        (0x80, (0..300u16).map(|i| (i % 251) as u8).collect()),
        (0x82, b"\xc0\x00".to_vec()),
    ];
    for (i, (b0, payload)) in frames.iter().enumerate() {
        let mask = [0x11 * i as u8 + 1, 0x5a, 0xa5, 0x0f];
        wire.push(*b0);
        if payload.len() < 126 {
            wire.push(0x80 | payload.len() as u8);
        } else {
            wire.push(0x80 | 126);
            wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        wire.extend_from_slice(&mask);
        wire.extend(payload.iter().enumerate().map(|(j, b)| b ^ mask[j % 4]));
        if b0 & 0x0f != 0x09 {
            want.extend_from_slice(payload);
        }
    }
    (wire, want)
}

#[test]
fn in_place_matches_feed_at_every_split_point() {
    let (frames, want) = client_frames();
    let stream = [UPGRADE, &frames].concat();
    for cut in 0..stream.len() {
        let mut copy = WsFramer::new(WsConfig::default());
        let mut rx = Vec::new();
        copy.feed(&stream[..cut], &mut rx).expect("a");
        copy.feed(&stream[cut..], &mut rx).expect("b");
        assert_eq!(rx, want, "feed, cut {cut}");
        let mut inplace = WsFramer::new(WsConfig::default());
        let mut got = Vec::new();
        for part in [&stream[..cut], &stream[cut..]] {
            let mut buf = part.to_vec();
            let k = inplace.feed_in_place(&mut buf).expect("in place");
            got.extend_from_slice(&buf[..k]);
        }
        assert_eq!(got, want, "in place, cut {cut}");
        assert_eq!(inplace.output(), copy.output(), "same answers, cut {cut}");
    }
}

#[test]
fn io_view_reads_mqtt_bytes_and_writes_binary_frames() {
    let mut server = WsFramer::new(WsConfig::default());
    let mut sock = Pipe::default();
    let req = ClientRequestBuilder::new("ws://localhost/mqtt".parse().expect("uri"))
        .with_sub_protocol("mqtt");
    let mut mid = match tungstenite::client::client(req, Pipe::default()) {
        Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
        _ => panic!("the client should wait for the answer"),
    };
    sock.inbound = std::mem::take(&mut mid.get_mut().get_mut().outbound);
    let mut scratch = [0u8; 4096];
    let e = server
        .io(&mut sock)
        .read(&mut scratch)
        .expect_err("only the upgrade so far");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    mid.get_mut().get_mut().inbound = std::mem::take(&mut sock.outbound);
    let (mut client, _) = mid.handshake().expect("101");
    client
        .write(Message::Frame(Frame::message(
            vec![0x10, 1],
            OpCode::Data(Data::Binary),
            false,
        )))
        .expect("w");
    client
        .write(Message::Frame(Frame::ping(vec![7])))
        .expect("w");
    client
        .write(Message::Frame(Frame::message(
            vec![0],
            OpCode::Data(Data::Continue),
            true,
        )))
        .expect("w");
    sock.inbound.extend(take_sent(&mut client));
    // Both fragments in one read, the ping answered on the way.
    let n = server.io(&mut sock).read(&mut scratch).expect("bytes");
    assert_eq!(&scratch[..n], [0x10, 1, 0]);
    let e = server
        .io(&mut sock)
        .read(&mut scratch)
        .expect_err("drained");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    let big = vec![5u8; WRITE_FRAME_BYTES_MAX + 10];
    server.io(&mut sock).write_all(&big).expect("framed");
    client
        .get_mut()
        .inbound
        .extend(std::mem::take(&mut sock.outbound));
    assert!(matches!(client.read().expect("pong"), Message::Pong(p) if p[..] == [7]));
    let mut got = 0;
    while got < big.len() {
        match client.read().expect("frame") {
            Message::Binary(b) => got += b.len(),
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(got, big.len());
    client.close(None).expect("close");
    sock.inbound.extend(take_sent(&mut client));
    assert_eq!(server.io(&mut sock).read(&mut scratch).expect("end"), 0);
    assert_eq!(
        server.io(&mut sock).write(b"x").map_err(|e| e.kind()),
        Err(io::ErrorKind::NotConnected)
    );
}
