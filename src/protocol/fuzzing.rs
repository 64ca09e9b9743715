//! Fuzzing entry points: the logic behind the one-line targets in `fuzz/`.
//!
//! Owns: the properties the fuzzer checks beyond "no panic": a decoded packet re-encodes
//! to bytes that decode to an equal packet, and a stream fed in arbitrary pieces (as a
//! ring buffer sees it) yields the same packets and error as the whole stream. Must not
//! touch: anything but the public codec API.

use super::{decode, encode, encoded_len, Decoded, Version};

/// The size cap used while fuzzing, small enough to exercise `PacketTooLarge`.
const FUZZ_MAX_PACKET_BYTES: usize = 64 * 1024;

/// Packets decoded per input at most, so one input stays fast.
const FUZZ_PACKETS_MAX: usize = 1024;

fn version_of(selector: u8) -> Version {
    match selector % 3 {
        0 => Version::V3_1,
        1 => Version::V3_1_1,
        _ => Version::V5,
    }
}

/// Decode every packet of `stream` in turn. Each decoded packet must re-encode to the
/// size `encoded_len` predicts and decode back to an equal packet. Returns the packet
/// lengths and the final outcome (`Ok(needed)` for a trailing fragment, or the error).
fn decode_stream(
    stream: &[u8],
    version: Version,
) -> (Vec<usize>, Result<usize, super::DecodeError>) {
    let mut lens = Vec::new();
    let mut at = 0;
    let mut out = Vec::new();
    while lens.len() < FUZZ_PACKETS_MAX {
        let rest = stream.get(at..).unwrap_or(&[]);
        match decode(rest, version, FUZZ_MAX_PACKET_BYTES) {
            Ok(Decoded::Packet { packet, len }) => {
                assert!(len > 0 && len <= rest.len(), "consumed length out of range");
                out.clear();
                encode(&packet, version, &mut out);
                assert_eq!(out.len(), encoded_len(&packet, version), "encoded_len");
                match decode(&out, version, usize::MAX) {
                    Ok(Decoded::Packet { packet: again, .. }) => assert_eq!(again, packet),
                    other => panic!("re-encoded packet did not decode: {other:?}"),
                }
                lens.push(len);
                at += len;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > rest.len(), "incomplete but enough bytes");
                return (lens, Ok(needed));
            }
            Err(e) => return (lens, Err(e)),
        }
    }
    (lens, Ok(0))
}

/// Fuzz `decode` on one input: the first byte picks the version, the rest is a stream.
pub fn fuzz_decode(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let _ = decode_stream(stream, version_of(selector));
}

/// Fuzz `decode` as a ring buffer feeds it: the first byte picks the version, the next
/// byte how many split points follow (as u16 offsets), then the stream. Bytes are made
/// available piece by piece; every packet and the final error must match the whole-stream
/// decode, and a prefix may only ever be `Incomplete`.
pub fn fuzz_decode_split(data: &[u8]) {
    let [selector, count, rest @ ..] = data else {
        return;
    };
    let version = version_of(*selector);
    let split_bytes = usize::from(*count % 16) * 2;
    let (splits, stream) = rest.split_at(split_bytes.min(rest.len()));
    let mut cuts: Vec<usize> = splits
        .chunks_exact(2)
        .map(|c| match *c {
            [a, b] => usize::from(u16::from_le_bytes([a, b])) % (stream.len() + 1),
            _ => 0,
        })
        .collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let (want_lens, want_end) = decode_stream(stream, version);
    let mut got_lens = Vec::new();
    let mut start = 0;
    for cut in cuts {
        loop {
            let view = stream.get(start..cut).unwrap_or(&[]);
            match decode(view, version, FUZZ_MAX_PACKET_BYTES) {
                Ok(Decoded::Packet { len, .. }) if got_lens.len() < FUZZ_PACKETS_MAX => {
                    got_lens.push(len);
                    start += len;
                }
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(Err(e), want_end, "error differs from whole-stream decode");
                    assert_eq!(got_lens, want_lens);
                    return;
                }
            }
        }
    }
    assert_eq!(
        got_lens, want_lens,
        "packets differ from whole-stream decode"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds are valid streams: every byte decodes into packets.
    #[test]
    fn committed_seeds_decode_cleanly() {
        let seeds: [&[u8]; 9] = [
            include_bytes!("../../fuzz/corpus/decode/connect_v31"),
            include_bytes!("../../fuzz/corpus/decode/connect_v311"),
            include_bytes!("../../fuzz/corpus/decode/connect_v5"),
            include_bytes!("../../fuzz/corpus/decode/publish_qos0_v311"),
            include_bytes!("../../fuzz/corpus/decode/publish_qos1_v311"),
            include_bytes!("../../fuzz/corpus/decode/publish_v5_props"),
            include_bytes!("../../fuzz/corpus/decode/subscribe_v311"),
            include_bytes!("../../fuzz/corpus/decode/subscribe_v5"),
            include_bytes!("../../fuzz/corpus/decode/stream_v5"),
        ];
        for seed in seeds {
            let Some((&selector, stream)) = seed.split_first() else {
                panic!("empty seed");
            };
            let (lens, end) = decode_stream(stream, version_of(selector));
            assert_eq!(end, Ok(2), "seed {seed:02x?} ends cleanly");
            assert_eq!(lens.iter().sum::<usize>(), stream.len());
            fuzz_decode(seed);
            fuzz_decode_split(seed);
        }
        fuzz_decode_split(include_bytes!("../../fuzz/corpus/decode_split/stream_v5"));
        fuzz_decode_split(include_bytes!("../../fuzz/corpus/decode_split/stream_v311"));
    }
}
