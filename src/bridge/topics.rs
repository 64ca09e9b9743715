//! Topic remapping between the local and the remote broker, by Mosquitto's rules.
//!
//! Owns: which local topics go out and under which remote name, which remote topics come
//! in and under which local name, and the subscriptions each side needs. Invariant: a
//! mapped topic is `to_prefix + (topic - from_prefix)` for the first rule in file order
//! whose `from_prefix + pattern` matches, or the other prefix itself for a `""` pattern;
//! the QoS going out is the lower of the message's and the rule's. Must not touch: packets,
//! sockets, queues.

use crate::config::bridge::TopicRule;
use crate::protocol::QoS;
use crate::topic::matches;

/// The compiled `topic` lines of one bridge.
#[derive(Debug, Clone)]
pub struct Mapper {
    rules: Vec<TopicRule>,
}

impl Mapper {
    /// Rules in file order (`BridgeConfig::topics`, already validated).
    pub fn new(rules: Vec<TopicRule>) -> Self {
        Mapper { rules }
    }

    /// The local filters whose messages the broker must offer to the bridge (`out` and
    /// `both`), with the rule's QoS.
    pub fn local_filters(&self) -> Vec<(String, QoS)> {
        let out = self.rules.iter().filter(|r| r.direction.outbound());
        out.map(|r| (r.local_filter(), r.qos)).collect()
    }

    /// The filters to subscribe to on the remote (`in` and `both`), with the rule's QoS.
    pub fn remote_filters(&self) -> Vec<(String, QoS)> {
        let inbound = self.rules.iter().filter(|r| r.direction.inbound());
        inbound.map(|r| (r.remote_filter(), r.qos)).collect()
    }

    /// The remote topic and QoS for a local message, or `None` when no `out` rule matches.
    pub fn outgoing(&self, local_topic: &str, qos: QoS) -> Option<(String, QoS)> {
        self.rules
            .iter()
            .filter(|r| r.direction.outbound())
            .find_map(|r| {
                let t = remap(local_topic, &r.local_prefix, &r.remote_prefix, &r.pattern)?;
                Some((t, qos.min(r.qos)))
            })
    }

    /// The local topic for a message from the remote, or `None` when no `in` rule matches.
    pub fn incoming(&self, remote_topic: &str) -> Option<String> {
        self.rules
            .iter()
            .filter(|r| r.direction.inbound())
            .find_map(|r| remap(remote_topic, &r.remote_prefix, &r.local_prefix, &r.pattern))
    }
}

/// `topic` seen from the `from` side, renamed for the `to` side.
fn remap(topic: &str, from: &str, to: &str, pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return (topic == from).then(|| to.to_string());
    }
    let filter = format!("{from}{pattern}");
    if !matches(&filter, topic) {
        return None;
    }
    let rest = topic.strip_prefix(from)?;
    let mapped = format!("{to}{rest}");
    crate::topic::valid_topic_name(&mapped).then_some(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bridge::Direction;

    fn rule(pattern: &str, direction: Direction, qos: QoS, l: &str, r: &str) -> TopicRule {
        TopicRule {
            pattern: pattern.into(),
            direction,
            qos,
            local_prefix: l.into(),
            remote_prefix: r.into(),
        }
    }

    /// `mosquitto.conf(5)`'s table: publishing on the full local topic reaches the full
    /// remote topic, and back.
    #[test]
    fn mosquittos_documented_table() {
        let table = [
            ("pattern", "L/", "R/", "L/pattern", "R/pattern"),
            ("pattern", "L/", "", "L/pattern", "pattern"),
            ("pattern", "", "R/", "pattern", "R/pattern"),
            ("pattern", "", "", "pattern", "pattern"),
            ("", "local", "remote", "local", "remote"),
        ];
        for (pattern, l, r, local, remote) in table {
            let m = Mapper::new(vec![rule(pattern, Direction::Both, QoS::ExactlyOnce, l, r)]);
            let out = m.outgoing(local, QoS::AtLeastOnce);
            assert_eq!(
                out,
                Some((remote.to_string(), QoS::AtLeastOnce)),
                "{pattern} {l} {r}"
            );
            assert_eq!(
                m.incoming(remote).as_deref(),
                Some(local),
                "{pattern} {l} {r}"
            );
        }
    }

    #[test]
    fn wildcards_keep_the_rest_of_the_topic() {
        let m = Mapper::new(vec![
            rule(
                "#",
                Direction::Both,
                QoS::ExactlyOnce,
                "local/topic/",
                "remote/topic/",
            ),
            rule(
                "clients/total",
                Direction::In,
                QoS::AtMostOnce,
                "test/mosquitto/org/",
                "$SYS/broker/",
            ),
        ]);
        assert_eq!(
            m.outgoing("local/topic/a/b", QoS::ExactlyOnce),
            Some(("remote/topic/a/b".into(), QoS::ExactlyOnce))
        );
        assert_eq!(m.outgoing("other/a", QoS::AtMostOnce), None);
        assert_eq!(
            m.incoming("remote/topic/x").as_deref(),
            Some("local/topic/x")
        );
        // The man page's example: a remote $SYS topic brought in under a local name.
        assert_eq!(
            m.incoming("$SYS/broker/clients/total").as_deref(),
            Some("test/mosquitto/org/clients/total")
        );
        assert_eq!(m.incoming("$SYS/broker/clients/active"), None);
        assert_eq!(
            m.remote_filters(),
            vec![
                ("remote/topic/#".to_string(), QoS::ExactlyOnce),
                ("$SYS/broker/clients/total".to_string(), QoS::AtMostOnce)
            ]
        );
        assert_eq!(
            m.local_filters(),
            vec![("local/topic/#".to_string(), QoS::ExactlyOnce)]
        );
    }

    #[test]
    fn direction_and_the_lower_qos_apply() {
        let m = Mapper::new(vec![
            rule("in/#", Direction::In, QoS::ExactlyOnce, "", ""),
            rule("out/#", Direction::Out, QoS::AtLeastOnce, "", "site/"),
        ]);
        assert_eq!(m.outgoing("in/x", QoS::AtLeastOnce), None);
        assert_eq!(m.incoming("site/out/x"), None);
        assert_eq!(
            m.outgoing("out/x", QoS::ExactlyOnce),
            Some(("site/out/x".into(), QoS::AtLeastOnce))
        );
        assert_eq!(
            m.outgoing("out/x", QoS::AtMostOnce),
            Some(("site/out/x".into(), QoS::AtMostOnce))
        );
    }
}
