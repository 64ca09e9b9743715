//! Decoding PUBLISH, SUBSCRIBE and CONNECT performs no heap allocation, and encoding into
//! a buffer with enough capacity performs none either.
//!
//! A counting wrapper around the system allocator counts allocations made by the current
//! thread only, so the test harness's own threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shardmq::protocol::{decode, encode, Decoded, Packet, Version};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counter is a const-initialised thread-local
// `Cell` without a destructor, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` came from `System`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const PUBLISH_V311: &[u8] = &[
    0x32, 0x0e, 0, 5, b's', b'/', b'x', b'/', b'y', 0, 1, b'h', b'e', b'l', b'l', b'o',
];

/// QoS 1 PUBLISH, 5.0, with empty correlation data, an alias and two user properties
/// (in identifier order, the order the encoder writes).
const PUBLISH_V5: &[u8] = &[
    0x32, 0x1d, 0, 3, b'a', b'/', b'b', 0, 9, 0x14, 0x09, 0, 0, 0x23, 0, 1, 0x26, 0, 1, b'k', 0, 1,
    b'v', 0x26, 0, 1, b'k', 0, 1, b'w', b'p',
];

/// SUBSCRIBE, 5.0: subscription id 7, filters `a/+` (QoS 1) and `b/#` (QoS 2, no local).
const SUBSCRIBE_V5: &[u8] = &[
    0x82, 0x11, 0, 10, 2, 0x0b, 7, 0, 3, b'a', b'/', b'+', 1, 0, 3, b'b', b'/', b'#', 0x06,
];

/// CONNECT, 5.0: will, user name, password and properties.
const CONNECT_V5: &[u8] = &[
    0x10, 0x2b, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xce, 0, 60, 5, 0x11, 0, 0, 0, 30, 0, 2, b'c',
    b'1', 5, 0x18, 0, 0, 0, 5, 0, 3, b'w', b'/', b't', 0, 3, b'b', b'y', b'e', 0, 1, b'u', 0, 2,
    b'p', b'w',
];

fn decode_all(bytes: &[u8], version: Version) -> usize {
    let mut n = 0;
    let allocs = allocations_during(|| match decode(bytes, version, usize::MAX) {
        Ok(Decoded::Packet { packet, len }) => {
            n = len;
            // Walk the lazily iterated lists too: iteration must not allocate either.
            match packet {
                Packet::Subscribe(s) => n += s.filters.iter().count(),
                Packet::Publish(p) => n += p.properties.user_properties.iter().count(),
                Packet::Connect(c) => n += usize::from(c.will.is_some()),
                _ => {}
            }
        }
        other => panic!("expected a packet, got {other:?}"),
    });
    assert_eq!(allocs, 0, "decode of {bytes:02x?} allocated");
    n
}

#[test]
fn decoding_publish_subscribe_and_connect_never_allocates() {
    assert_eq!(
        decode_all(PUBLISH_V311, Version::V3_1_1),
        PUBLISH_V311.len()
    );
    assert_eq!(decode_all(PUBLISH_V5, Version::V5), PUBLISH_V5.len() + 2);
    assert_eq!(
        decode_all(SUBSCRIBE_V5, Version::V5),
        SUBSCRIBE_V5.len() + 2
    );
    assert_eq!(decode_all(CONNECT_V5, Version::V5), CONNECT_V5.len() + 1);
}

#[test]
fn encoding_into_a_reserved_buffer_never_allocates() {
    let mut out = Vec::with_capacity(256);
    for (bytes, version) in [
        (PUBLISH_V311, Version::V3_1_1),
        (PUBLISH_V5, Version::V5),
        (SUBSCRIBE_V5, Version::V5),
        (CONNECT_V5, Version::V5),
    ] {
        let Ok(Decoded::Packet { packet, .. }) = decode(bytes, version, usize::MAX) else {
            panic!("fixture does not decode");
        };
        out.clear();
        assert_eq!(allocations_during(|| encode(&packet, version, &mut out)), 0);
        assert_eq!(out, bytes, "re-encoding is byte-identical");
    }
}
