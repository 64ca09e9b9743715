//! Property tests: arbitrary packets round-trip through encode → decode in 3.1.1 and 5.0,
//! and every strict prefix of an encoding decodes to `Incomplete`, never an error.

use proptest::prelude::*;

use super::testutil::round_trip;
use super::*;

/// An owned description of a packet; `build` borrows a `Packet` from it.
#[derive(Debug, Clone)]
enum Model {
    Publish {
        flags: (bool, u8, bool),
        topic: String,
        id: u16,
        payload: Vec<u8>,
        alias: Option<u16>,
    },
    Connect {
        clean: bool,
        keep_alive: u16,
        client: String,
        will: Option<(String, Vec<u8>, u8, bool)>,
        user: Option<String>,
        pass: Option<Vec<u8>>,
        expiry: Option<u32>,
    },
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Ack {
        type_id: u8,
        id: u16,
        code: u8,
    },
    Subscribe {
        id: u16,
        subs: Vec<(String, u8)>,
        sub_id: Option<u32>,
    },
    SubAck {
        id: u16,
        codes: Vec<u8>,
    },
    Unsubscribe {
        id: u16,
        filters: Vec<String>,
    },
    UnsubAck {
        id: u16,
        codes: Vec<u8>,
    },
    Ping(bool),
    Disconnect {
        code: u8,
        expiry: Option<u32>,
    },
    Auth {
        code: u8,
        method: Option<String>,
    },
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é€/_-]{0,12}"
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9/$é]{1,16}"
}

fn filter() -> impl Strategy<Value = String> {
    "[a-z0-9/+#]{1,16}"
}

fn id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// PUBLISH and CONNECT: the packets with the most fields.
fn message_model() -> impl Strategy<Value = Model> {
    let qos = 0u8..=2;
    prop_oneof![
        (
            (any::<bool>(), qos.clone(), any::<bool>()),
            topic(),
            id(),
            prop::collection::vec(any::<u8>(), 0..48),
            prop::option::of(1..=u16::MAX)
        )
            .prop_map(|(flags, topic, id, payload, alias)| Model::Publish {
                flags,
                topic,
                id,
                payload,
                alias
            }),
        (
            any::<bool>(),
            any::<u16>(),
            text(),
            prop::option::of((
                topic(),
                prop::collection::vec(any::<u8>(), 0..8),
                qos.clone(),
                any::<bool>()
            )),
            prop::option::of(text()),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            prop::option::of(any::<u32>())
        )
            .prop_map(|(clean, keep_alive, client, will, user, pass, expiry)| {
                Model::Connect {
                    clean,
                    keep_alive,
                    client,
                    will,
                    user,
                    pass,
                    expiry,
                }
            })
    ]
}

/// Every packet type.
fn model() -> impl Strategy<Value = Model> {
    prop_oneof![
        message_model(),
        (
            any::<bool>(),
            prop::sample::select(vec![0u8, 0x84, 0x85, 0x86, 0x87, 0x88])
        )
            .prop_map(|(session_present, code)| Model::ConnAck {
                session_present,
                code
            }),
        (
            4u8..=7,
            id(),
            prop::sample::select(vec![0u8, 0x10, 0x80, 0x87, 0x91, 0x92])
        )
            .prop_map(|(type_id, id, code)| Model::Ack { type_id, id, code }),
        (
            id(),
            prop::collection::vec((filter(), 0u8..=0x2f), 1..6),
            prop::option::of(1u32..=268_435_455)
        )
            .prop_map(|(id, subs, sub_id)| Model::Subscribe { id, subs, sub_id }),
        (
            id(),
            prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0x80]), 1..6)
        )
            .prop_map(|(id, codes)| Model::SubAck { id, codes }),
        (id(), prop::collection::vec(filter(), 1..6))
            .prop_map(|(id, filters)| Model::Unsubscribe { id, filters }),
        (
            id(),
            prop::collection::vec(prop::sample::select(vec![0u8, 0x11, 0x80, 0x87]), 1..6)
        )
            .prop_map(|(id, codes)| Model::UnsubAck { id, codes }),
        any::<bool>().prop_map(Model::Ping),
        (
            prop::sample::select(vec![0u8, 0x04, 0x81, 0x8e, 0x95]),
            prop::option::of(any::<u32>())
        )
            .prop_map(|(code, expiry)| Model::Disconnect { code, expiry }),
        (
            prop::sample::select(vec![0u8, 0x18, 0x19]),
            prop::option::of(text())
        )
            .prop_map(|(code, method)| Model::Auth { code, method }),
    ]
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap_or(PacketId::MIN)
}

/// The reason `code` stands for in packet `type_id`, as the 3.x decoder would see it.
fn reason(type_id: u8, code: u8, v5: bool) -> ReasonCode {
    let code = if v5 { code } else { 0 };
    ReasonCode::for_packet(type_id, code).unwrap_or(ReasonCode::Success)
}

/// Borrowed pieces a model's packet points into.
struct Parts<'a> {
    users: Vec<(&'a str, &'a str)>,
    subs: Vec<Subscription<'a>>,
    strs: Vec<&'a str>,
    ids: Vec<u32>,
}

fn parts(m: &Model) -> Parts<'_> {
    let mut p = Parts {
        users: vec![("k", "v")],
        subs: Vec::new(),
        strs: Vec::new(),
        ids: Vec::new(),
    };
    match m {
        Model::Subscribe { subs, sub_id, .. } => {
            for (filter, byte) in subs {
                let options =
                    SubscriptionOptions::from_byte(byte & 0x2f, Version::V5).unwrap_or_default();
                p.subs.push(Subscription { filter, options });
            }
            p.ids.extend(sub_id);
        }
        Model::Unsubscribe { filters, .. } => p.strs.extend(filters.iter().map(String::as_str)),
        _ => {}
    }
    p
}

fn build<'a>(m: &'a Model, p: &'a Parts<'a>, v5: bool) -> Packet<'a> {
    let user_properties = UserProperties::Slice(if v5 { &p.users } else { &[] });
    let props = Properties {
        user_properties,
        ..Properties::default()
    };
    match m {
        Model::Publish { .. } => build_publish(m, props, v5),
        Model::Connect { .. } => build_connect(m, props, v5),
        Model::ConnAck {
            session_present,
            code,
        } => {
            let reason = ReasonCode::from_u8(*code).unwrap_or(ReasonCode::Success);
            let reason = if v5 {
                reason
            } else {
                ReasonCode::from_v3_connack(reason.to_v3_connack()).unwrap_or(reason)
            };
            Packet::ConnAck(ConnAck {
                session_present: *session_present && !reason.is_error(),
                reason,
                properties: props,
            })
        }
        Model::Ack { type_id, id, code } => {
            let a = Ack {
                packet_id: pid(*id),
                reason: reason(*type_id, *code, v5),
                properties: props,
            };
            match type_id {
                4 => Packet::PubAck(a),
                5 => Packet::PubRec(a),
                6 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            }
        }
        Model::Subscribe { .. }
        | Model::SubAck { .. }
        | Model::Unsubscribe { .. }
        | Model::UnsubAck { .. } => build_list(m, p, props, v5),
        Model::Ping(req) => {
            if *req {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        Model::Disconnect { code, expiry } => Packet::Disconnect(Disconnect {
            reason: reason(14, *code, v5),
            properties: Properties {
                session_expiry_interval: expiry.filter(|_| v5),
                ..props
            },
        }),
        Model::Auth { code, method } => Packet::Auth(Auth {
            reason: reason(15, *code, true),
            properties: Properties {
                authentication_method: method.as_deref(),
                ..props
            },
        }),
    }
}

/// The PUBLISH of `m` (which must be `Model::Publish`).
fn build_publish<'a>(m: &'a Model, props: Properties<'a>, v5: bool) -> Packet<'a> {
    match m {
        Model::Publish {
            flags: (dup, qos, retain),
            topic,
            id,
            payload,
            alias,
        } => {
            let qos = QoS::from_bits(*qos).unwrap_or_default();
            let alias = if v5 { *alias } else { None };
            let topic = if alias.is_some() && topic.len() % 2 == 0 {
                ""
            } else {
                topic
            };
            Packet::Publish(Publish {
                dup: *dup && qos != QoS::AtMostOnce,
                qos,
                retain: *retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then(|| pid(*id)),
                properties: Properties {
                    topic_alias: alias,
                    message_expiry_interval: v5.then_some(7),
                    ..props
                },
                payload,
            })
        }
        _ => Packet::PingReq,
    }
}

/// The CONNECT of `m` (which must be `Model::Connect`).
fn build_connect<'a>(m: &'a Model, props: Properties<'a>, v5: bool) -> Packet<'a> {
    match m {
        Model::Connect {
            clean,
            keep_alive,
            client,
            will,
            user,
            pass,
            expiry,
        } => {
            let version = if v5 { Version::V5 } else { Version::V3_1_1 };
            let will = will.as_ref().map(|(topic, payload, qos, retain)| Will {
                topic,
                payload,
                qos: QoS::from_bits(*qos).unwrap_or_default(),
                retain: *retain,
                properties: Properties {
                    will_delay_interval: v5.then_some(1),
                    ..props
                },
            });
            let username = user.as_deref().or(pass.as_ref().map(|_| "u"));
            let properties = Properties {
                session_expiry_interval: expiry.filter(|_| v5),
                ..props
            };
            let password = pass.as_deref();
            Packet::Connect(Connect {
                version,
                clean_start: *clean,
                keep_alive: *keep_alive,
                client_id: client,
                will,
                username,
                password,
                properties,
            })
        }
        _ => Packet::PingReq,
    }
}

/// The SUBSCRIBE, SUBACK, UNSUBSCRIBE or UNSUBACK of `m`.
fn build_list<'a>(m: &'a Model, p: &'a Parts<'a>, props: Properties<'a>, v5: bool) -> Packet<'a> {
    match m {
        Model::Subscribe { id, .. } => {
            let properties = Properties {
                subscription_identifiers: SubscriptionIds::Slice(if v5 { &p.ids } else { &[] }),
                ..props
            };
            Packet::Subscribe(Subscribe {
                packet_id: pid(*id),
                properties,
                filters: SubscriptionList::Slice(&p.subs),
            })
        }
        Model::SubAck { id, codes } => Packet::SubAck(SubAck {
            packet_id: pid(*id),
            properties: props,
            codes,
        }),
        Model::Unsubscribe { id, .. } => Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(*id),
            properties: props,
            filters: StrList::Slice(&p.strs),
        }),
        Model::UnsubAck { id, codes } => Packet::UnsubAck(UnsubAck {
            packet_id: pid(*id),
            properties: props,
            codes: if v5 { codes } else { &[] },
        }),
        _ => Packet::PingResp,
    }
}

/// Options bits a 3.x SUBSCRIBE cannot carry are dropped by the encoder; mirror that.
fn v3_options<'a>(p: &Parts<'a>) -> Vec<Subscription<'a>> {
    let qos_only = |s: &Subscription<'_>| SubscriptionOptions {
        qos: s.options.qos,
        ..SubscriptionOptions::default()
    };
    p.subs
        .iter()
        .map(|s| Subscription {
            filter: s.filter,
            options: qos_only(s),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn v5_packets_round_trip(m in model()) {
        let p = parts(&m);
        round_trip(&build(&m, &p, true), Version::V5);
    }

    #[test]
    fn v311_packets_round_trip(m in model()) {
        if matches!(m, Model::Auth { .. }) {
            return Ok(());
        }
        let mut p = parts(&m);
        p.subs = v3_options(&p);
        round_trip(&build(&m, &p, false), Version::V3_1_1);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::fuzz_decode(&bytes);
        fuzzing::fuzz_decode_split(&bytes);
    }
}
