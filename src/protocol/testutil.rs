//! Small expect-helpers shared by the packet files' tests.

use super::{decode, encode, encoded_len, DecodeError, Decoded, Packet, Version};

/// One malformed-input case: name, version, literal bytes, the exact error, its code.
pub(crate) type Case = (&'static str, Version, &'static [u8], DecodeError, u8);

/// Decode a whole packet that must fill exactly `bytes`.
pub(crate) fn expect_packet(bytes: &[u8], version: Version) -> Packet<'_> {
    match decode(bytes, version, usize::MAX) {
        Ok(Decoded::Packet { packet, len }) => {
            assert_eq!(len, bytes.len(), "consumed length");
            packet
        }
        other => panic!("expected a packet from {bytes:02x?}, got {other:?}"),
    }
}

/// Every case fails with its exact error and reason code.
pub(crate) fn expect_errors(cases: &[Case]) {
    for (name, version, bytes, err, code) in cases {
        match decode(bytes, *version, usize::MAX) {
            Err(got) => {
                assert_eq!(got, *err, "{name}: wrong error");
                assert_eq!(got.reason_code().to_u8(), *code, "{name}: wrong code");
            }
            Ok(other) => panic!("{name}: expected {err:?}, got {other:?}"),
        }
    }
}

/// Encode, check the size prediction, decode back to an equal packet, and check that every
/// strict prefix of the encoding asks for more bytes. Returns the encoding.
pub(crate) fn round_trip(packet: &Packet<'_>, version: Version) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, version, &mut out);
    assert_eq!(out.len(), encoded_len(packet, version), "encoded_len");
    assert_eq!(&expect_packet(&out, version), packet, "round trip");
    for cut in 0..out.len() {
        match decode(out.get(..cut).unwrap_or(&[]), version, usize::MAX) {
            Ok(Decoded::Incomplete { needed }) => assert!(needed > cut, "prefix {cut}"),
            other => panic!("prefix {cut} of {out:02x?}: {other:?}"),
        }
    }
    out
}
