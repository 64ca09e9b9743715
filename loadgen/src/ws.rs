//! The client side of MQTT over WebSocket (RFC 6455), sans-IO: the upgrade request, the
//! broker's 101 answer, framing outgoing bytes and deframing incoming ones.
//!
//! Owns: one connection's WebSocket state: whether the upgrade is done, how much of the
//! connection's write buffer is already framed, received bytes not yet deframed and
//! payload bytes not yet handed to the MQTT parser. Invariants: outgoing frames are binary,
//! masked (with the all-zero key, so framing never rewrites a payload byte) and at most
//! `FRAME_PAYLOAD_BYTES_MAX` long; incoming frames are refused past `FRAME_IN_BYTES_MAX`
//! and never read past the bytes received. Must not touch: sockets and TLS (the caller
//! feeds bytes in and writes the write buffer out), MQTT packets.

/// The largest payload of one outgoing frame.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// The largest incoming frame accepted (an MQTT packet of the load generator's size cap,
/// plus framing).
pub const FRAME_IN_BYTES_MAX: usize = (1 << 20) + 16;
/// The longest upgrade answer accepted.
const RESPONSE_BYTES_MAX: usize = 8 * 1024;

/// One connection's WebSocket layer.
#[derive(Debug, Default)]
pub struct WsClient {
    /// The 101 answer has been read: MQTT bytes flow in frames.
    pub upgraded: bool,
    /// Bytes of the write buffer already framed (or, before the upgrade, the request).
    pub framed: usize,
    raw: Vec<u8>,
    payload: Vec<u8>,
    payload_pos: usize,
}

/// The upgrade request for `path` on `host` (`127.0.0.1:1883`), subprotocol `mqtt`.
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes()
}

impl WsClient {
    /// Frames `buf[self.framed..]` in place (headers inserted before each chunk), so the
    /// whole buffer is ready for the wire. Only after the upgrade.
    pub fn frame_pending(&mut self, buf: &mut Vec<u8>) {
        if !self.upgraded {
            return;
        }
        while self.framed < buf.len() {
            let len = (buf.len() - self.framed).min(FRAME_PAYLOAD_BYTES_MAX);
            let header = frame_header(len);
            let at = self.framed;
            buf.splice(at..at, header.iter().copied());
            self.framed += header.len() + len;
        }
    }

    /// The caller removed `n` bytes from the front of its write buffer.
    pub fn consumed(&mut self, n: usize) {
        self.framed = self.framed.saturating_sub(n);
    }

    /// Takes received bytes: the upgrade answer first, then frames. Err: the broker
    /// refused the upgrade, sent a malformed or oversized frame, or closed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.raw.extend_from_slice(bytes);
        if !self.upgraded {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.raw.len() > RESPONSE_BYTES_MAX {
                    return Err("WebSocket upgrade answer too long".into());
                }
                return Ok(());
            };
            let status = self.raw[..end].split(|&b| b == b'\r').next().unwrap_or(&[]);
            if !status.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(status).into_owned();
                return Err(format!("WebSocket upgrade refused: {line}"));
            }
            self.raw.drain(..end + 4);
            self.upgraded = true;
        }
        self.deframe()
    }

    /// Moves deframed payload into `out`; returns how many bytes.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = (self.payload.len() - self.payload_pos).min(out.len());
        out[..n].copy_from_slice(&self.payload[self.payload_pos..self.payload_pos + n]);
        self.payload_pos += n;
        if self.payload_pos == self.payload.len() {
            self.payload.clear();
            self.payload_pos = 0;
        }
        n
    }

    fn deframe(&mut self) -> Result<(), String> {
        let mut at = 0;
        while let Some((opcode, start, end)) = parse_frame(&self.raw[at..])? {
            match opcode {
                0x0 | 0x2 => self
                    .payload
                    .extend_from_slice(&self.raw[at + start..at + end]),
                0x8 => return Err("broker sent a WebSocket Close".into()),
                // Pings are not answered: a bounded benchmark run ends before any keepalive.
                0x9 | 0xa => {}
                op => return Err(format!("unexpected WebSocket opcode {op:#x}")),
            }
            at += end;
        }
        self.raw.drain(..at);
        Ok(())
    }
}

/// A binary frame header, FIN set, masked with the zero key, for a `len`-byte payload.
fn frame_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x82];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// One unmasked server frame at the start of `b`: (opcode, payload start, frame end), or
/// `None` while incomplete.
fn parse_frame(b: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("broker sent a masked WebSocket frame".into());
    }
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(l), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > FRAME_IN_BYTES_MAX as u64 {
        return Err(format!("WebSocket frame of {len} bytes is too large"));
    }
    let end = head + len as usize;
    Ok((b.len() >= end).then_some((b[0] & 0x0f, head, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmask and join the payloads of client frames (as a server would).
    fn server_read(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert_eq!(b[0], 0x82);
            assert!(b[1] & 0x80 != 0, "client frames are masked");
            let (len, head) = match b[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (usize::from(n), 2),
            };
            let key = &b[head..head + 4];
            let body = &b[head + 4..head + 4 + len];
            out.extend(body.iter().enumerate().map(|(i, x)| x ^ key[i % 4]));
            b = &b[head + 4 + len..];
        }
        out
    }

    #[test]
    fn framing_in_place_round_trips_at_every_size_class() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let mut ws = WsClient {
                upgraded: true,
                ..Default::default()
            };
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = b"raw".to_vec();
            ws.framed = 3;
            buf.extend_from_slice(&data);
            ws.frame_pending(&mut buf);
            assert_eq!(ws.framed, buf.len());
            assert_eq!(&buf[..3], b"raw");
            assert_eq!(server_read(&buf[3..]), data, "len {len}");
        }
    }

    #[test]
    fn upgrade_then_frames_split_anywhere() {
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        wire.extend_from_slice(&[0x82, 3, 1, 2, 3]); // binary
        wire.extend_from_slice(&[0x89, 1, 9]); // ping, ignored
        wire.extend_from_slice(&[0x00, 126, 0, 2, 4, 5]); // continuation, 16-bit length
        for split in 0..wire.len() {
            let mut ws = WsClient::default();
            ws.feed(&wire[..split]).expect("prefix");
            ws.feed(&wire[split..]).expect("rest");
            assert!(ws.upgraded);
            let mut out = [0u8; 16];
            let n = ws.take(&mut out);
            assert_eq!(&out[..n], &[1, 2, 3, 4, 5], "split at {split}");
        }
    }

    #[test]
    fn refusals() {
        let mut ws = WsClient::default();
        assert!(ws.feed(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        let mut ws = WsClient {
            upgraded: true,
            ..Default::default()
        };
        assert!(ws.feed(&[0x82, 0x81, 0, 0, 0, 0, 1]).is_err(), "masked");
        let mut ws = WsClient {
            upgraded: true,
            ..Default::default()
        };
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(ws.feed(&huge).is_err(), "oversized");
        let mut ws = WsClient {
            upgraded: true,
            ..Default::default()
        };
        assert!(ws.feed(&[0x88, 0]).is_err(), "close");
    }
}
