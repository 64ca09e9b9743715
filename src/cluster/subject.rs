//! MQTT topic names and filters ↔ NATS subjects, for routing between cluster nodes.
//!
//! Owns: the one mapping every node of a cluster must agree on. Invariant: for a valid MQTT
//! filter `f` and topic `t`, `matches(f, t)` holds exactly when `t`'s subject matches one of
//! `f`'s subjects under NATS rules (tested against a naive NATS matcher), and a topic's
//! subject decodes back to the same topic. Must not touch: sockets, the NATS client, broker
//! state. Pure functions only.
//!
//! # The mapping
//! A subject is `smq.<cluster>.<ns>.<level>.<level>…`:
//! * `<ns>` is `t` for topics that do not start with `$` and `d` for those that do. A filter
//!   that starts with a wildcard maps into `t` only, so `#` and `+/…` never match `$SYS/…`
//!   [MQTT-4.7.2-1] without any special case in NATS.
//! * Each MQTT level becomes one NATS token. Bytes outside `!`..`~`, and `.`, `*`, `>`, `%`,
//!   `$`, `+`, `#`, are written `%XX` (upper-case hex of each byte, so non-ASCII UTF-8 is
//!   escaped byte by byte). An empty level (NATS has no empty tokens) is the token `%`,
//!   which escaping never produces on its own, so decoding is unambiguous.
//! * Filter `+` is `*`. Filter `#` matches its parent level too (`a/#` matches `a`), which
//!   NATS `>` does not, so `a/#` maps to two subjects: `…a` and `…a.>`. They are disjoint, so
//!   a message matches at most one of them.
//! * Subjects longer than [`SUBJECT_BYTES_MAX`] are refused: a NATS server refuses protocol
//!   lines past its `max_control_line` (4 KiB by default), so such topics stay local.
#![forbid(unsafe_code)]

use smallvec::SmallVec;

/// The longest subject produced; leaves room under NATS's default 4 KiB control line for
/// `HPUB`, the reply subject and the sizes.
pub const SUBJECT_BYTES_MAX: usize = 3072;
/// The longest cluster name; it also names the JetStream buckets.
pub const CLUSTER_NAME_BYTES_MAX: usize = 32;

/// Why a topic, filter or subject has no mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectError {
    /// The cluster name is empty, too long, or not `[A-Za-z0-9_-]`.
    BadClusterName,
    /// The mapped subject would exceed [`SUBJECT_BYTES_MAX`].
    TooLong,
    /// The subject is not under this cluster's prefix or is not a valid encoding.
    NotOurs,
}

/// The subject prefix of one cluster, `smq.<cluster>`: nodes with different cluster names
/// can share a NATS system without seeing each other's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// `smq.<cluster>.`, with the trailing dot.
    text: String,
}

impl Prefix {
    /// The prefix of cluster `name`, which must be 1..=32 bytes of `[A-Za-z0-9_-]` (it also
    /// appears in JetStream bucket names, which allow only those).
    pub fn new(name: &str) -> Result<Prefix, SubjectError> {
        if !valid_cluster_name(name) {
            return Err(SubjectError::BadClusterName);
        }
        Ok(Prefix {
            text: format!("smq.{name}."),
        })
    }

    /// A control subject of this cluster: `smq.<cluster>.c.<what>`.
    pub fn control(&self, what: &str) -> String {
        format!("{}c.{what}", self.text)
    }

    /// The queue subject of node `node` (`*` for every node's): `smq.<cluster>.q.<node>`.
    pub fn queue(&self, node: &str) -> String {
        format!("{}q.{node}", self.text)
    }

    /// The queue subject of share group queue `qname` (`queue_group`; `*` for every
    /// group's): `smq.<cluster>.g.<qname>`.
    pub fn shared(&self, qname: &str) -> String {
        format!("{}g.{qname}", self.text)
    }
}

/// Whether `name` can be a cluster or node name: 1..=32 bytes of `[A-Za-z0-9_-]`.
pub fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= CLUSTER_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The subjects of one filter: one, or two for a trailing `#` (parent level and below).
pub type FilterSubjects = SmallVec<[String; 2]>;

/// The subject a PUBLISH to `topic` (a valid topic name) is sent on.
pub fn topic_to_subject(prefix: &Prefix, topic: &str) -> Result<String, SubjectError> {
    let mut out = String::with_capacity(prefix.text.len() + 2 + topic.len());
    out.push_str(&prefix.text);
    out.push_str(if topic.starts_with('$') { "d" } else { "t" });
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    within_limit(out)
}

/// The subjects to subscribe to for `filter` (a valid filter, without `$share/G/`).
pub fn filter_to_subjects(prefix: &Prefix, filter: &str) -> Result<FilterSubjects, SubjectError> {
    let mut out = String::with_capacity(prefix.text.len() + 2 + filter.len());
    out.push_str(&prefix.text);
    out.push_str(if filter.starts_with('$') { "d" } else { "t" });
    let mut subjects = FilterSubjects::new();
    for level in filter.split('/') {
        match level {
            "#" => {
                subjects.push(within_limit(out.clone())?);
                out.push_str(".>");
            }
            "+" => out.push_str(".*"),
            _ => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    subjects.push(within_limit(out)?);
    // `#` alone: its "parent" is the namespace itself, which is no topic.
    if filter == "#" {
        subjects.remove(0);
    }
    Ok(subjects)
}

/// The NATS queue group for the shared subscription `$share/group/filter`.
///
/// NATS picks one member per queue name among *all* matching subscriptions, whatever their
/// subjects, while MQTT gives each (group, filter) pair its own copy; so the name covers
/// both. A hash keeps it short whatever the lengths: `q` and 32 hex digits.
pub fn queue_group(group: &str, filter: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(group.as_bytes());
    h.update([0]);
    h.update(filter.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(33);
    out.push('q');
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The topic a subject of this cluster carries; the inverse of [`topic_to_subject`].
pub fn subject_to_topic(prefix: &Prefix, subject: &str) -> Result<String, SubjectError> {
    let rest = subject
        .strip_prefix(prefix.text.as_str())
        .ok_or(SubjectError::NotOurs)?;
    let (ns, levels) = rest.split_once('.').ok_or(SubjectError::NotOurs)?;
    let mut bytes = Vec::with_capacity(levels.len());
    for (i, token) in levels.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        decode_level(&mut bytes, token)?;
    }
    let topic = String::from_utf8(bytes).map_err(|_| SubjectError::NotOurs)?;
    match (ns, topic.starts_with('$')) {
        ("t", false) | ("d", true) => Ok(topic),
        _ => Err(SubjectError::NotOurs),
    }
}

fn within_limit(subject: String) -> Result<String, SubjectError> {
    if subject.len() > SUBJECT_BYTES_MAX {
        Err(SubjectError::TooLong)
    } else {
        Ok(subject)
    }
}

/// Whether `b` may stand for itself inside a token.
fn plain(b: u8) -> bool {
    matches!(b, b'!'..=b'~') && !matches!(b, b'.' | b'*' | b'>' | b'%' | b'$' | b'+' | b'#')
}

fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in level.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

fn decode_level(out: &mut Vec<u8>, token: &str) -> Result<(), SubjectError> {
    if token == "%" {
        return Ok(());
    }
    let b = token.as_bytes();
    if b.is_empty() {
        return Err(SubjectError::NotOurs);
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|&c| hex(c));
            let lo = b.get(i + 2).and_then(|&c| hex(c));
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(SubjectError::NotOurs),
            }
            i += 3;
        } else if plain(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return Err(SubjectError::NotOurs);
        }
    }
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// NATS subject matching, naively: `*` matches one token, `>` (last) one or more.
/// The oracle for the mapping's tests; the NATS server does the real matching.
pub fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(pt), Some(st)) if pt == "*" || pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{matches, valid_filter, valid_topic_name};
    use proptest::prelude::*;

    fn prefix() -> Prefix {
        Prefix::new("c1").unwrap()
    }

    fn subjects(filter: &str) -> Vec<String> {
        filter_to_subjects(&prefix(), filter).unwrap().into_vec()
    }

    #[test]
    fn examples() {
        let p = prefix();
        assert_eq!(topic_to_subject(&p, "a/b").unwrap(), "smq.c1.t.a.b");
        assert_eq!(topic_to_subject(&p, "/a//").unwrap(), "smq.c1.t.%.a.%.%");
        assert_eq!(topic_to_subject(&p, "$SYS/x").unwrap(), "smq.c1.d.%24SYS.x");
        assert_eq!(
            topic_to_subject(&p, "a.b/c d/*/>/é").unwrap(),
            "smq.c1.t.a%2Eb.c%20d.%2A.%3E.%C3%A9"
        );
        assert_eq!(subjects("#"), ["smq.c1.t.>"]);
        assert_eq!(subjects("a/#"), ["smq.c1.t.a", "smq.c1.t.a.>"]);
        assert_eq!(subjects("+/+"), ["smq.c1.t.*.*"]);
        assert_eq!(subjects("$SYS/#"), ["smq.c1.d.%24SYS", "smq.c1.d.%24SYS.>"]);
        let q = queue_group("g", "a/#");
        assert_eq!(q.len(), 33);
        assert_ne!(q, queue_group("g", "a/+"));
        assert_ne!(queue_group("g/a", "b"), queue_group("g", "a/b"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        let t = topic_to_subject(&prefix(), "$SYS/broker").unwrap();
        for f in ["#", "+/broker", "+/#"] {
            assert!(subjects(f).iter().all(|s| !nats_matches(s, &t)), "{f}");
        }
        assert!(subjects("$SYS/#").iter().any(|s| nats_matches(s, &t)));
    }

    #[test]
    fn bad_names_and_foreign_subjects_are_refused() {
        for name in ["", "a.b", "a b", "é", &"x".repeat(33)] {
            assert_eq!(
                Prefix::new(name),
                Err(SubjectError::BadClusterName),
                "{name}"
            );
        }
        let p = prefix();
        for s in [
            "smq.c2.t.a",
            "smq.c1.t",
            "smq.c1.t.%2",
            "smq.c1.t.a%zz",
            "smq.c1.x.a",
        ] {
            assert_eq!(subject_to_topic(&p, s), Err(SubjectError::NotOurs), "{s}");
        }
        assert_eq!(
            subject_to_topic(&p, "smq.c1.t.%24x"),
            Err(SubjectError::NotOurs)
        );
        let long = "a".repeat(SUBJECT_BYTES_MAX);
        assert_eq!(topic_to_subject(&p, &long), Err(SubjectError::TooLong));
    }

    /// Levels drawn from a small alphabet with the awkward characters, so random topics
    /// and filters collide often enough to exercise matching.
    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[ab.$ *>%é]{1,3}",
            Just("a".to_string()),
            Just("$SYS".to_string()),
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let lvl = prop_oneof![3 => level(), 1 => Just("+".to_string())];
        (prop::collection::vec(lvl, 1..5), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".to_string());
            }
            l.join("/")
        })
    }

    proptest! {
        #[test]
        fn mqtt_matching_is_nats_matching_after_mapping(f in filter(), t in topic()) {
            prop_assume!(valid_filter(&f) && valid_topic_name(&t));
            let subject = topic_to_subject(&prefix(), &t).unwrap();
            let hits = subjects(&f).iter().filter(|s| nats_matches(s, &subject)).count();
            prop_assert!(hits <= 1, "subjects of one filter overlap");
            prop_assert_eq!(matches(&f, &t), hits == 1, "{} vs {} as {}", f, t, subject);
        }

        #[test]
        fn topics_round_trip(t in topic()) {
            prop_assume!(valid_topic_name(&t));
            let subject = topic_to_subject(&prefix(), &t).unwrap();
            prop_assert!(subject.split('.').all(|tok| !tok.is_empty()));
            prop_assert!(subject.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(subject_to_topic(&prefix(), &subject).unwrap(), t);
        }

        #[test]
        fn subject_tokens_are_wildcards_only_where_the_filter_has_them(f in filter()) {
            prop_assume!(valid_filter(&f));
            for s in subjects(&f) {
                let wild = s.split('.').filter(|t| *t == "*" || *t == ">").count();
                let mqtt = f.split('/').filter(|l| *l == "+" || *l == "#").count();
                prop_assert!(wild <= mqtt);
                prop_assert!(s.split('.').all(|t| !t.is_empty()
                    && (t.len() == 1 || !t.contains(['*', '>']))));
            }
        }
    }
}
