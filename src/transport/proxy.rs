//! The PROXY protocol header (HAProxy's v1 text form and v2 binary form), parsed sans-IO.
//!
//! Owns: turning the first bytes of a connection accepted behind a load balancer into the
//! real client address and, for v2 with TLS TLVs, the client certificate's CN as the proxy
//! verified it. Invariants: `parse` never reads past the header it reports (`consumed`),
//! never allocates more than the CN, answers `Incomplete` only while the bytes so far are a
//! strict prefix of a header that could still be valid, and refuses any header longer than
//! `HEADER_BYTES_MAX` without waiting for it. Must not touch: sockets, MQTT bytes after the
//! header (the caller decodes those from `&buf[consumed..]`).
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which header a listener requires (`enable_proxy_protocol 1|2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text form: `PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n`.
    V1,
    /// The binary form, with optional TLVs.
    V2,
}

/// The outcome of parsing the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid prefix: read more bytes and call again with all of them.
    Incomplete,
    /// A whole header.
    Done {
        /// The client's address, or `None` for `UNKNOWN`/`LOCAL`/`UNSPEC` (the proxy's own
        /// connection, such as a health check: use the socket's peer address).
        addr: Option<SocketAddr>,
        /// v2 only: the CN of a client certificate the proxy received and verified.
        tlv_cn: Option<String>,
        /// Header bytes to drop; MQTT (or TLS, or HTTP) starts right after.
        consumed: usize,
    },
    /// Not a header of the required version: close the connection.
    Invalid(&'static str),
}

/// The v1 header's maximum length, CRLF included (spec §2.1).
pub const V1_BYTES_MAX: usize = 107;
/// The largest v2 header accepted, fixed part and TLVs included. Real proxies send a few
/// hundred bytes; the protocol allows 64 KiB, which we refuse to buffer per connection.
pub const HEADER_BYTES_MAX: usize = 4096;
/// The v2 signature (spec §2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_BYTES: usize = 16;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
const PP2_CLIENT_CERT_SESS: u8 = 0x04;
/// A CN longer than this is not a username we take.
const CN_BYTES_MAX: usize = 256;

/// Parse the header the listener requires from the first bytes of a connection.
pub fn parse(buf: &[u8], version: ProxyVersion) -> Parsed {
    match version {
        ProxyVersion::V1 => parse_v1(buf),
        ProxyVersion::V2 => parse_v2(buf),
    }
}

/// A header read from the socket, and the bytes that came after it in the same reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The client's address, or `None` to keep the socket's peer address.
    pub addr: Option<SocketAddr>,
    /// v2: a client certificate CN the proxy verified.
    pub tlv_cn: Option<String>,
    /// Bytes read past the header: the first bytes of TLS, HTTP or MQTT. The next layer
    /// takes them before reading the socket again (`TlsStream::feed`, or returned first
    /// by the variant's `read`).
    pub rest: Vec<u8>,
}

/// The start of a connection on a listener with `enable_proxy_protocol`: reads the header
/// from the socket, holding at most `HEADER_BYTES_MAX` bytes.
#[derive(Debug)]
pub struct Pending {
    version: ProxyVersion,
    buf: Vec<u8>,
}

impl Pending {
    /// A connection just accepted on a listener that requires `version`.
    pub fn new(version: ProxyVersion) -> Self {
        Pending {
            version,
            buf: Vec::new(),
        }
    }

    /// Read until the header is whole: `Ok(Some(header))`, or `WouldBlock` (wait for the
    /// next readable edge). `InvalidData`: no valid header, close. `UnexpectedEof`: the
    /// peer closed first.
    pub fn read_header(&mut self, src: &mut impl Read) -> io::Result<Header> {
        let mut chunk = [0u8; 512];
        loop {
            let room = (HEADER_BYTES_MAX - self.buf.len()).min(chunk.len());
            let n = src.read(&mut chunk[..room.max(1)])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            match parse(&self.buf, self.version) {
                Parsed::Incomplete if self.buf.len() < HEADER_BYTES_MAX => {}
                Parsed::Incomplete => return Err(invalid("PROXY header too long")),
                Parsed::Invalid(why) => return Err(invalid(why)),
                Parsed::Done {
                    addr,
                    tlv_cn,
                    consumed,
                } => {
                    let rest = self.buf.split_off(consumed);
                    self.buf = Vec::new();
                    return Ok(Header { addr, tlv_cn, rest });
                }
            }
        }
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Fuzzing entry point (`fuzz/fuzz_targets/proxy.rs`): no panic, and `consumed` within `data`.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    for v in [ProxyVersion::V1, ProxyVersion::V2] {
        if let Parsed::Done { consumed, .. } = parse(data, v) {
            assert!(consumed <= data.len() && consumed > 0);
        }
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Parsed::Invalid("not a PROXY v1 header");
    }
    let window = &buf[..buf.len().min(V1_BYTES_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_BYTES_MAX {
            Parsed::Invalid("PROXY v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[PREFIX.len()..end]) else {
        return Parsed::Invalid("PROXY v1 header is not ASCII");
    };
    match v1_fields(line) {
        Ok(addr) => Parsed::Done {
            addr,
            tlv_cn: None,
            consumed: end + 2,
        },
        Err(e) => Parsed::Invalid(e),
    }
}

/// `TCP4 SRC DST SPORT DPORT`, `TCP6 …` or `UNKNOWN[ anything]`: the source address.
fn v1_fields(line: &str) -> Result<Option<SocketAddr>, &'static str> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(None);
    }
    let f: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = f[..] else {
        return Err("PROXY v1 header needs 5 fields");
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            v1_ip::<Ipv4Addr>(src)?.into(),
            v1_ip::<Ipv4Addr>(dst)?.into(),
        ),
        "TCP6" => (
            v1_ip::<Ipv6Addr>(src)?.into(),
            v1_ip::<Ipv6Addr>(dst)?.into(),
        ),
        _ => return Err("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let _ = dst;
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Some(SocketAddr::new(src, sport)))
}

fn v1_ip<T: std::str::FromStr>(s: &str) -> Result<T, &'static str> {
    s.parse().map_err(|_| "PROXY v1 address is not valid")
}

fn v1_port(s: &str) -> Result<u16, &'static str> {
    // The spec forbids leading zeros and signs; `u16::from_str` would take "+1" and "01".
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0') || s == "0";
    match s.parse() {
        Ok(p) if canonical => Ok(p),
        _ => Err("PROXY v1 port is not valid"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Parsed::Invalid("not a PROXY v2 header");
    }
    if buf.len() < V2_FIXED_BYTES {
        return Parsed::Incomplete;
    }
    let ver_cmd = buf[12];
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("PROXY v2 version is not 2");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("PROXY v2 command is not LOCAL or PROXY"),
    };
    let total = V2_FIXED_BYTES + len;
    if total > HEADER_BYTES_MAX {
        return Parsed::Invalid("PROXY v2 header too long");
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let body = &buf[V2_FIXED_BYTES..total];
    let (addr, addr_bytes) = match v2_address(family, body) {
        Ok(a) => a,
        Err(e) => return Parsed::Invalid(e),
    };
    let tlv_cn = match v2_tlvs(&body[addr_bytes..]) {
        Ok(cn) => cn,
        Err(e) => return Parsed::Invalid(e),
    };
    Parsed::Done {
        // LOCAL: the proxy speaks for itself; the address block, if any, is ignored.
        addr: if local { None } else { addr },
        tlv_cn: if local { None } else { tlv_cn },
        consumed: total,
    }
}

/// The source address and how many body bytes the address block takes.
fn v2_address(family: u8, body: &[u8]) -> Result<(Option<SocketAddr>, usize), &'static str> {
    let need = match family {
        0x00 => return Ok((None, 0)),
        0x11 => 12,
        0x21 => 36,
        0x12 | 0x22 => return Err("PROXY v2 over UDP is not a stream"),
        0x31 | 0x32 => return Err("PROXY v2 unix socket addresses are not supported"),
        _ => return Err("PROXY v2 address family is not valid"),
    };
    if body.len() < need {
        return Err("PROXY v2 address block is short");
    }
    let ip_len = (need - 4) / 2;
    let port_at = 2 * ip_len;
    let ip: IpAddr = if ip_len == 4 {
        let mut o = [0u8; 4];
        o.copy_from_slice(&body[..4]);
        Ipv4Addr::from(o).into()
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&body[..16]);
        Ipv6Addr::from(o).into()
    };
    let port = u16::from_be_bytes([body[port_at], body[port_at + 1]]);
    Ok((Some(SocketAddr::new(ip, port)), need))
}

/// Walk the TLVs; return the CN of a verified client certificate, if the proxy sent one.
fn v2_tlvs(mut tlvs: &[u8]) -> Result<Option<String>, &'static str> {
    let mut cn = None;
    while !tlvs.is_empty() {
        let (kind, value, rest) = tlv(tlvs)?;
        if kind == PP2_TYPE_SSL {
            cn = ssl_cn(value)?;
        }
        tlvs = rest;
    }
    Ok(cn)
}

/// One TLV: type, value, the rest.
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    if b.len() < 3 {
        return Err("PROXY v2 TLV is short");
    }
    let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
    if b.len() < 3 + len {
        return Err("PROXY v2 TLV runs past the header");
    }
    Ok((b[0], &b[3..3 + len], &b[3 + len..]))
}

/// `PP2_TYPE_SSL`: client flags, verify result, then sub-TLVs. The CN counts only when the
/// client presented a certificate and the proxy verified it (verify = 0).
fn ssl_cn(v: &[u8]) -> Result<Option<String>, &'static str> {
    if v.len() < 5 {
        return Err("PROXY v2 SSL TLV is short");
    }
    let client = v[0];
    let verify = u32::from_be_bytes([v[1], v[2], v[3], v[4]]);
    let mut subs = &v[5..];
    let mut cn = None;
    while !subs.is_empty() {
        let (kind, value, rest) = tlv(subs)?;
        if kind == PP2_SUBTYPE_SSL_CN {
            if value.len() > CN_BYTES_MAX {
                return Err("PROXY v2 SSL CN too long");
            }
            let s = std::str::from_utf8(value).map_err(|_| "PROXY v2 SSL CN is not UTF-8")?;
            cn = Some(s.to_string());
        }
        subs = rest;
    }
    let has_cert = client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) != 0;
    let trusted = client & PP2_CLIENT_SSL != 0 && has_cert && verify == 0;
    Ok(cn.filter(|_| trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(addr: Option<&str>, cn: Option<&str>, consumed: usize) -> Parsed {
        Parsed::Done {
            addr: addr.map(|a| a.parse().expect("test address")),
            tlv_cn: cn.map(str::to_string),
            consumed,
        }
    }

    /// A v2 header: signature, ver/cmd, family, then `body` with its length.
    fn v2(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[ver_cmd, family]);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    const V4_BLOCK: [u8; 12] = [10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x07, 0x5b];

    fn ssl_tlv(client: u8, verify: u32, cn: &[u8]) -> Vec<u8> {
        let mut sub = vec![PP2_SUBTYPE_SSL_CN];
        sub.extend_from_slice(&(cn.len() as u16).to_be_bytes());
        sub.extend_from_slice(cn);
        let mut v = vec![client];
        v.extend_from_slice(&verify.to_be_bytes());
        v.extend_from_slice(&sub);
        let mut t = vec![PP2_TYPE_SSL];
        t.extend_from_slice(&(v.len() as u16).to_be_bytes());
        t.extend_from_slice(&v);
        t
    }

    #[test]
    fn v1_table() {
        let cases: &[(&[u8], Parsed)] = &[
            (
                b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nMQTT",
                done(Some("192.168.0.1:56324"), None, 47),
            ),
            (
                b"PROXY TCP6 ::1 ::2 1 2\r\n",
                done(Some("[::1]:1"), None, 24),
            ),
            (b"PROXY UNKNOWN\r\n", done(None, None, 15)),
            (b"PROXY UNKNOWN ffff::1 ::2 1 2\r\n", done(None, None, 31)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", Parsed::Incomplete),
            (b"PRO", Parsed::Incomplete),
            (b"", Parsed::Incomplete),
            (
                b"\x10\x0c\x00\x04MQTT",
                Parsed::Invalid("not a PROXY v1 header"),
            ),
            (
                b"GET / HTTP/1.1\r\n",
                Parsed::Invalid("not a PROXY v1 header"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                Parsed::Invalid("PROXY v1 header needs 5 fields"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                Parsed::Invalid("PROXY v1 address is not valid"),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
                Parsed::Invalid("PROXY v1 address is not valid"),
            ),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Parsed::Invalid("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                Parsed::Invalid("PROXY v1 port is not valid"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                Parsed::Invalid("PROXY v1 port is not valid"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
                Parsed::Invalid("PROXY v1 port is not valid"),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                Parsed::Invalid("PROXY v1 header needs 5 fields"),
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Parsed::Incomplete),
            (
                b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
                Parsed::Invalid("PROXY v1 header is not ASCII"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                &parse(bytes, ProxyVersion::V1),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(
            parse(&long, ProxyVersion::V1),
            Parsed::Invalid("PROXY v1 header longer than 107 bytes")
        );
    }

    #[test]
    fn v2_table() {
        let v6: Vec<u8> = [[0u8; 15].as_slice(), &[1], &[0; 15], &[2], &[0, 80, 0, 81]].concat();
        let cases: Vec<(Vec<u8>, Parsed)> = vec![
            (
                v2(0x21, 0x11, &V4_BLOCK),
                done(Some("10.0.0.1:12345"), None, 28),
            ),
            (v2(0x21, 0x21, &v6), done(Some("[::1]:80"), None, 52)),
            (v2(0x20, 0x11, &V4_BLOCK), done(None, None, 28)),
            (v2(0x21, 0x00, &[]), done(None, None, 16)),
            // An unknown TLV (0xEE) is skipped.
            (
                v2(0x21, 0x11, &[&V4_BLOCK[..], &[0xee, 0, 1, 9]].concat()),
                done(Some("10.0.0.1:12345"), None, 32),
            ),
            (
                v2(0x22, 0x11, &V4_BLOCK),
                Parsed::Invalid("PROXY v2 command is not LOCAL or PROXY"),
            ),
            (
                v2(0x11, 0x11, &V4_BLOCK),
                Parsed::Invalid("PROXY v2 version is not 2"),
            ),
            (
                v2(0x21, 0x12, &V4_BLOCK),
                Parsed::Invalid("PROXY v2 over UDP is not a stream"),
            ),
            (
                v2(0x21, 0x31, &[0; 216]),
                Parsed::Invalid("PROXY v2 unix socket addresses are not supported"),
            ),
            (
                v2(0x21, 0x41, &V4_BLOCK),
                Parsed::Invalid("PROXY v2 address family is not valid"),
            ),
            (
                v2(0x21, 0x21, &V4_BLOCK),
                Parsed::Invalid("PROXY v2 address block is short"),
            ),
            (
                v2(0x21, 0x11, &[&V4_BLOCK[..], &[0xee, 0, 9, 1]].concat()),
                Parsed::Invalid("PROXY v2 TLV runs past the header"),
            ),
            (
                v2(0x21, 0x11, &[&V4_BLOCK[..], &[0xee, 0]].concat()),
                Parsed::Invalid("PROXY v2 TLV is short"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                Parsed::Invalid("not a PROXY v2 header"),
            ),
            (
                b"\r\n\r\n\0\r\nQUIX\n".to_vec(),
                Parsed::Invalid("not a PROXY v2 header"),
            ),
        ];
        for (bytes, want) in &cases {
            assert_eq!(&parse(bytes, ProxyVersion::V2), want, "{bytes:x?}");
        }
        let mut huge = v2(0x21, 0x11, &V4_BLOCK);
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            parse(&huge[..16], ProxyVersion::V2),
            Parsed::Invalid("PROXY v2 header too long")
        );
    }

    #[test]
    fn v2_tls_cn_only_when_verified_by_the_proxy() {
        let verified = PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN;
        let cases: &[(u8, u32, Option<&str>)] = &[
            (verified, 0, Some("device-7")),
            (verified, 1, None),
            (PP2_CLIENT_SSL, 0, None),
            (PP2_CLIENT_CERT_CONN, 0, None),
        ];
        for &(client, verify, want) in cases {
            let body = [&V4_BLOCK[..], &ssl_tlv(client, verify, b"device-7")].concat();
            let h = v2(0x21, 0x11, &body);
            let n = h.len();
            assert_eq!(
                parse(&h, ProxyVersion::V2),
                done(Some("10.0.0.1:12345"), want, n)
            );
        }
        let body = [&V4_BLOCK[..], &ssl_tlv(verified, 0, b"\xff")].concat();
        assert_eq!(
            parse(&v2(0x21, 0x11, &body), ProxyVersion::V2),
            Parsed::Invalid("PROXY v2 SSL CN is not UTF-8")
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete_and_bytes_after_are_left_alone() {
        let body = [&V4_BLOCK[..], &ssl_tlv(0x03, 0, b"cn")].concat();
        let headers = [
            (v2(0x21, 0x11, &body), ProxyVersion::V2),
            (b"PROXY TCP6 ::1 ::2 1 2\r\n".to_vec(), ProxyVersion::V1),
        ];
        for (h, v) in headers {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut], v), Parsed::Incomplete, "cut {cut}");
            }
            let mut more = h.clone();
            more.extend_from_slice(b"\x10\x0c");
            match parse(&more, v) {
                Parsed::Done { consumed, .. } => assert_eq!(consumed, h.len()),
                other => panic!("{other:?}"),
            }
            fuzz_parse(&more);
        }
    }

    #[test]
    fn fuzz_seeds_parse() {
        let v2 = include_bytes!("../../fuzz/corpus/proxy/v2_tcp4_ssl_cn");
        assert_eq!(
            parse(v2, ProxyVersion::V2),
            done(Some("10.0.0.1:12345"), Some("device-7"), v2.len())
        );
        let v1 = include_bytes!("../../fuzz/corpus/proxy/v1_tcp4");
        assert_eq!(
            parse(v1, ProxyVersion::V1),
            done(Some("192.168.0.1:56324"), None, v1.len())
        );
        for seed in [
            &v1[..],
            v2,
            include_bytes!("../../fuzz/corpus/proxy/v1_unknown"),
        ] {
            fuzz_parse(seed);
        }
    }

    /// Hands out `data` in reads of `step` bytes, then WouldBlock.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn pending_reads_the_header_and_keeps_what_follows() {
        let mut input = include_bytes!("../../fuzz/corpus/proxy/v2_tcp4_ssl_cn").to_vec();
        input.extend_from_slice(b"\x16\x03\x01");
        for step in [1, 7, 4096] {
            let mut p = Pending::new(ProxyVersion::V2);
            let mut src = Trickle { data: &input, step };
            let h = loop {
                match p.read_header(&mut src) {
                    Ok(h) => break h,
                    Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "step {step}"),
                }
            };
            assert_eq!(h.addr, Some("10.0.0.1:12345".parse().expect("addr")));
            assert_eq!(h.tlv_cn.as_deref(), Some("device-7"));
            // What came past the header, then what is still in the socket: nothing lost.
            assert_eq!(
                [&h.rest[..], src.data].concat(),
                b"\x16\x03\x01",
                "step {step}"
            );
            assert_eq!(h.rest.is_empty(), step == 1, "step {step}");
        }
        let mut p = Pending::new(ProxyVersion::V1);
        let e = p.read_header(&mut Trickle {
            data: b"\x10\x0c\x00\x04MQTT",
            step: 64,
        });
        assert_eq!(e.map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData));
        let e = Pending::new(ProxyVersion::V1).read_header(&mut &b""[..]);
        assert_eq!(e.map_err(|e| e.kind()), Err(io::ErrorKind::UnexpectedEof));
        let mut junk = Pending::new(ProxyVersion::V1);
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 5000]].concat();
        let e = junk.read_header(&mut Trickle {
            data: &long,
            step: 100,
        });
        assert_eq!(e.map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData));
        assert!(junk.buf.len() <= V1_BYTES_MAX + 100);
    }
}
