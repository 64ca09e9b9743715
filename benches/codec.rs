//! Codec benches: decode and encode of the packets the broker handles most.
//!
//! Each bench is named after the function it times and the packet it feeds it. Run with
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`; figures are kept
//! in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shardmq::protocol::{
    decode, encode, encode_publish, Connect, Decoded, Packet, PacketId, Properties, Publish, QoS,
    Subscribe, Subscription, SubscriptionIds, SubscriptionList, SubscriptionOptions,
    UserProperties, Version, Will,
};

const TOPIC: &str = "sensors/room1/temperature";

/// A QoS 0 PUBLISH of exactly 64 bytes: 2 header + 27 topic + 35 payload.
fn publish_qos0_64b() -> Publish<'static> {
    Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TOPIC,
        packet_id: None,
        properties: Properties::default(),
        payload: b"{\"t\":21.5,\"unit\":\"C\",\"seq\":1234567}",
    }
}

/// A QoS 1 PUBLISH with typical 5.0 properties.
fn publish_qos1_v5() -> Publish<'static> {
    Publish {
        qos: QoS::AtLeastOnce,
        packet_id: PacketId::new(42),
        properties: Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            content_type: Some("application/json"),
            response_topic: Some("replies/client-7"),
            correlation_data: Some(b"req-000123"),
            topic_alias: Some(3),
            user_properties: UserProperties::Slice(&[("trace", "abc123"), ("tenant", "t1")]),
            ..Properties::default()
        },
        ..publish_qos0_64b()
    }
}

/// A 5.0 CONNECT with a Will, credentials and properties.
fn connect_v5() -> Connect<'static> {
    Connect {
        version: Version::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "loadgen-client-000123",
        will: Some(Will {
            topic: "clients/000123/status",
            payload: b"offline",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                will_delay_interval: Some(5),
                ..Properties::default()
            },
        }),
        username: Some("user-123"),
        password: Some(b"secret-password"),
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(16),
            request_problem_information: Some(1),
            user_properties: UserProperties::Slice(&[("app", "loadgen")]),
            ..Properties::default()
        },
    }
}

const FILTERS: [&str; 10] = [
    "sensors/+/temperature",
    "sensors/+/humidity",
    "alerts/#",
    "clients/000123/cmd",
    "fleet/truck-7/gps",
    "fleet/+/status",
    "$share/g1/jobs/#",
    "home/kitchen/light",
    "home/+/+/battery",
    "metrics/cpu",
];

fn subscriptions() -> Vec<Subscription<'static>> {
    FILTERS
        .iter()
        .map(|filter| Subscription {
            filter,
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        })
        .collect()
}

fn subscribe_10<'a>(subs: &'a [Subscription<'a>]) -> Subscribe<'a> {
    Subscribe {
        packet_id: PacketId::MIN,
        properties: Properties {
            subscription_identifiers: SubscriptionIds::Slice(&[7]),
            ..Properties::default()
        },
        filters: SubscriptionList::Slice(subs),
    }
}

fn bytes_of(packet: &Packet<'_>, version: Version) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, version, &mut out);
    out
}

/// What a caller reads from a decoded packet: enough to keep the decode from being
/// optimised away without timing a copy of the whole `Packet` value.
fn summary(packet: &Packet<'_>) -> usize {
    match packet {
        Packet::Publish(p) => p.topic.len() + p.payload.len(),
        Packet::Connect(c) => c.client_id.len() + usize::from(c.keep_alive),
        Packet::Subscribe(s) => usize::from(s.packet_id.get()),
        _ => 0,
    }
}

fn bench_decode(c: &mut Criterion, name: &str, bytes: &[u8], version: Version) {
    c.bench_function(name, |b| {
        b.iter(|| match decode(black_box(bytes), version, usize::MAX) {
            Ok(Decoded::Packet { packet, len }) => summary(&packet) + len,
            _ => 0,
        })
    });
}

fn bench_encode(c: &mut Criterion, name: &str, packet: &Packet<'_>, version: Version) {
    let mut out = Vec::with_capacity(4096);
    c.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(packet), version, &mut out);
            out.len()
        })
    });
}

fn publish(c: &mut Criterion) {
    let p0 = publish_qos0_64b();
    let bytes0 = bytes_of(&Packet::Publish(p0.clone()), Version::V3_1_1);
    assert_eq!(bytes0.len(), 64);
    bench_decode(c, "decode_publish_qos0_64b", &bytes0, Version::V3_1_1);
    let mut out = Vec::with_capacity(4096);
    c.bench_function("encode_publish_qos0_64b", |b| {
        b.iter(|| {
            out.clear();
            encode_publish(&mut out, Version::V3_1_1, black_box(&p0));
            out.len()
        })
    });
    let p1 = Packet::Publish(publish_qos1_v5());
    let bytes1 = bytes_of(&p1, Version::V5);
    bench_decode(c, "decode_publish_qos1_v5_props", &bytes1, Version::V5);
    bench_encode(c, "encode_publish_qos1_v5_props", &p1, Version::V5);
}

fn connect_and_subscribe(c: &mut Criterion) {
    let conn = Packet::Connect(connect_v5());
    let bytes = bytes_of(&conn, Version::V5);
    bench_decode(c, "decode_connect_v5_props", &bytes, Version::V5);
    bench_encode(c, "encode_connect_v5_props", &conn, Version::V5);
    let subs = subscriptions();
    let sub = Packet::Subscribe(subscribe_10(&subs));
    let bytes = bytes_of(&sub, Version::V5);
    bench_decode(c, "decode_subscribe_10_filters", &bytes, Version::V5);
    bench_encode(c, "encode_subscribe_10_filters", &sub, Version::V5);
}

criterion_group!(benches, publish, connect_and_subscribe);
criterion_main!(benches);
