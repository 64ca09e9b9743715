#![forbid(unsafe_code)]
//! Topic names and topic filters: the rules for what is valid, the rule for what matches,
//! and the single-threaded structures the router matches against.
//!
//! Owns: validation of names and filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7 and §4.8.2 for
//! `$share`), the reference matcher [`matches`], the subscription index
//! [`trie::FilterTrie`] (filter → value, queried once per publish) and the retained index
//! [`retained::TopicTree`] (topic name → value, queried once per subscribe).
//!
//! Invariants:
//! * Nothing here accepts more than [`TOPIC_LEVELS_MAX`] levels or [`TOPIC_BYTES_MAX`]
//!   bytes, so every walk (recursive or not) is bounded: a topic of 65,535 `/` cannot
//!   overflow the stack (the mosquitto bug CVE-2019-11779).
//! * [`matches`] is the oracle: the trie and the tree are differential-tested against it,
//!   and ACL checks use it directly. It stays naive on purpose.
//!
//! Must not touch: sockets, sessions, the bus, clocks, threads. No `unsafe`, no locks:
//! each shard owns its own instances (`!Sync` is fine).

mod children;
mod ordered;
pub mod retained;
pub mod trie;
mod wide;

pub use retained::TopicTree;
pub use trie::FilterTrie;

/// The most levels a topic name or filter may have (levels = number of `/` + 1).
///
/// Deeper names and filters are rejected by [`valid_topic_name`] and [`valid_filter`].
/// This bounds the depth of every trie walk and so the recursion depth and the size of any
/// explicit stack (CVE-2019-11779 crashed a broker with a 65,535-level filter). 128 is far
/// beyond any real topic scheme and keeps a worst-case walk under a few KiB of stack.
pub const TOPIC_LEVELS_MAX: usize = 128;

/// The most bytes a topic name or filter may have: the MQTT UTF-8 string limit.
pub const TOPIC_BYTES_MAX: usize = 65_535;

/// The first level of a shared-subscription filter (MQTT 5 §4.8.2).
pub const SHARE_PREFIX: &str = "$share";

/// Whether `topic` is a valid topic name for PUBLISH (and Will Topic).
///
/// Non-empty, at most [`TOPIC_BYTES_MAX`] bytes and [`TOPIC_LEVELS_MAX`] levels, and no
/// `+`, `#` or U+0000 [MQTT-4.7.3-1], [MQTT-4.7.3-2]. Empty levels are allowed.
pub fn valid_topic_name(topic: &str) -> bool {
    let b = topic.as_bytes();
    if b.is_empty() || b.len() > TOPIC_BYTES_MAX {
        return false;
    }
    memchr::memchr3(b'+', b'#', 0, b).is_none() && levels_within_max(b)
}

/// Whether `filter` is a valid topic filter for SUBSCRIBE / UNSUBSCRIBE (not `$share`-aware:
/// use [`parse_filter`] for that).
///
/// Non-empty, at most [`TOPIC_BYTES_MAX`] bytes and [`TOPIC_LEVELS_MAX`] levels, no U+0000;
/// `#` only as the whole last level [MQTT-4.7.1-2]; `+` only as a whole level [MQTT-4.7.1-3].
pub fn valid_filter(filter: &str) -> bool {
    let b = filter.as_bytes();
    if b.is_empty() || b.len() > TOPIC_BYTES_MAX {
        return false;
    }
    // Short filters (nearly all) are cheapest in one byte loop; long ones in SIMD passes.
    if b.len() <= FILTER_SCAN_BYTES {
        filter_ok_bytewise(b)
    } else {
        filter_ok_simd(b)
    }
}

/// Up to this length [`valid_filter`] checks byte by byte (measured: docs/decisions/0002).
const FILTER_SCAN_BYTES: usize = 64;

fn filter_ok_bytewise(b: &[u8]) -> bool {
    let mut slashes = 0usize;
    for (i, &c) in b.iter().enumerate() {
        let ok = match c {
            b'/' => {
                slashes += 1;
                slashes < TOPIC_LEVELS_MAX
            }
            b'+' => starts_level(b, i) && ends_level(b, i),
            b'#' => starts_level(b, i) && i + 1 == b.len(),
            0 => false,
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Wildcards are rare, so count `/` in one vectorised pass, then jump between wildcards.
fn filter_ok_simd(b: &[u8]) -> bool {
    levels_within_max(b)
        && memchr::memchr3_iter(b'+', b'#', 0, b).all(|i| match b.get(i) {
            Some(b'+') => starts_level(b, i) && ends_level(b, i),
            Some(b'#') => starts_level(b, i) && i + 1 == b.len(),
            _ => false,
        })
}

fn starts_level(b: &[u8], i: usize) -> bool {
    i == 0 || b.get(i - 1) == Some(&b'/')
}

fn ends_level(b: &[u8], i: usize) -> bool {
    matches!(b.get(i + 1), None | Some(&b'/'))
}

/// Counts every `/` rather than stopping at the limit: this loop vectorises (tens of bytes
/// per cycle), which beats an early-exit memchr loop for the short names that dominate.
fn levels_within_max(b: &[u8]) -> bool {
    b.iter().filter(|&&c| c == b'/').count() < TOPIC_LEVELS_MAX
}

/// Whether the topic filter `filter` matches the topic name `topic`, per MQTT §4.7.
///
/// * `+` matches exactly one level, which may be empty: `+/+` matches `/finance`.
/// * `#` matches the parent level and any number of levels below: `sport/#` matches `sport`.
/// * A filter whose first character is a wildcard never matches a topic beginning with `$`
///   [MQTT-4.7.2-1]: `#` does not match `$SYS/x`, but `$SYS/#` does.
///
/// Both arguments are expected to be valid ([`valid_filter`], [`valid_topic_name`]); for
/// invalid input the answer is unspecified, but this never panics and never recurses.
/// Deliberately naive: it is the oracle the trie is tested against, and the ACL matcher.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = levels(filter);
    let mut t = levels(topic);
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some(fl), Some(tl)) if fl == "+" || fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The levels of a topic name or filter, split on `/` (with memchr). `a//b` yields `a`, ``,
/// `b`; `a/` yields `a`, ``; the empty string yields one empty level.
pub fn levels(s: &str) -> Levels<'_> {
    Levels { rest: Some(s) }
}

/// Iterator returned by [`levels`].
#[derive(Debug, Clone)]
pub struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let (level, rest) = split_level(s);
        self.rest = rest;
        Some(level)
    }
}

/// Splits off the first level: `("a", Some("b/c"))` for `a/b/c`, `("a", None)` for `a`.
#[inline]
pub(crate) fn split_level(s: &str) -> (&str, Option<&str>) {
    match find_slash(s.as_bytes()) {
        // `/` is ASCII, so both sides of it are char boundaries.
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// A topic name known to satisfy [`valid_topic_name`], borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicName<'a>(&'a str);

impl<'a> TopicName<'a> {
    /// `Some` if `topic` is a valid topic name.
    pub fn new(topic: &'a str) -> Option<Self> {
        valid_topic_name(topic).then_some(TopicName(topic))
    }

    /// The name.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A topic filter known to satisfy [`valid_filter`] (not `$share`: see [`parse_filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicFilter<'a>(&'a str);

impl<'a> TopicFilter<'a> {
    /// `Some` if `filter` is a valid topic filter.
    pub fn new(filter: &'a str) -> Option<Self> {
        valid_filter(filter).then_some(TopicFilter(filter))
    }

    /// The filter.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether this filter matches `topic` (see [`matches`]).
    pub fn matches(&self, topic: TopicName<'_>) -> bool {
        matches(self.0, topic.0)
    }
}

/// The first `/` in `b`. Levels are usually a few bytes long, where a plain loop costs fewer
/// instructions than memchr's dispatch, so the first [`SLASH_SCAN_BYTES`] are scanned
/// directly and memchr takes over for long levels (measured: docs/decisions/0002).
#[inline]
fn find_slash(b: &[u8]) -> Option<usize> {
    let (head, tail) = b.split_at(b.len().min(SLASH_SCAN_BYTES));
    match head.iter().position(|&c| c == b'/') {
        Some(i) => Some(i),
        // The last level of a short name ends here without a memchr call.
        None if tail.is_empty() => None,
        None => memchr::memchr(b'/', tail).map(|i| i + head.len()),
    }
}

/// How many bytes of a level [`find_slash`] scans byte by byte before calling memchr.
const SLASH_SCAN_BYTES: usize = 16;

/// A shared subscription `$share/{group}/{filter}` (MQTT 5 §4.8.2), borrowed from the
/// SUBSCRIBE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name: non-empty, no `/`, `+`, `#` or U+0000.
    pub group: &'a str,
    /// The topic filter proper; valid per [`valid_filter`].
    pub filter: &'a str,
}

/// What a SUBSCRIBE topic filter is, once parsed by [`parse_filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind<'a> {
    /// An ordinary filter, valid per [`valid_filter`].
    Normal(&'a str),
    /// A shared subscription.
    Shared(SharedFilter<'a>),
}

impl<'a> FilterKind<'a> {
    /// The filter to match topics against (the inner filter for a shared subscription).
    pub fn filter(&self) -> &'a str {
        match self {
            FilterKind::Normal(f) => f,
            FilterKind::Shared(s) => s.filter,
        }
    }
}

/// Why [`parse_filter`] rejected a filter. Both map to reason code 0x8F (Topic Filter
/// invalid) in MQTT 5; a v3 broker closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterError {
    /// Not a valid topic filter (empty, misplaced wildcard, U+0000, too deep or too long).
    Invalid,
    /// Begins with the `$share` level but is not `$share/{group}/{filter}` with a valid
    /// group and a valid, non-empty filter.
    InvalidShare,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FilterError::Invalid => "invalid topic filter",
            FilterError::InvalidShare => "invalid shared subscription filter",
        })
    }
}

impl std::error::Error for FilterError {}

/// Parses and validates a SUBSCRIBE topic filter, recognising shared subscriptions.
///
/// A filter whose first level is exactly `$share` must be `$share/{group}/{filter}`: the
/// group non-empty without `/`, `+`, `#` or U+0000, the inner filter valid and non-empty
/// (else [`FilterError::InvalidShare`]). Anything else is validated with [`valid_filter`]
/// (else [`FilterError::Invalid`]). `$sharex/a` is an ordinary filter.
pub fn parse_filter(filter: &str) -> Result<FilterKind<'_>, FilterError> {
    match split_level(filter) {
        (SHARE_PREFIX, rest) => parse_shared(filter.len(), rest),
        _ if valid_filter(filter) => Ok(FilterKind::Normal(filter)),
        _ => Err(FilterError::Invalid),
    }
}

fn parse_shared(total_bytes: usize, rest: Option<&str>) -> Result<FilterKind<'_>, FilterError> {
    let (group, inner) = match rest.map(split_level) {
        Some((group, Some(inner))) => (group, inner),
        _ => return Err(FilterError::InvalidShare),
    };
    let group_ok = !group.is_empty() && memchr::memchr3(b'+', b'#', 0, group.as_bytes()).is_none();
    if !group_ok || !valid_filter(inner) || total_bytes > TOPIC_BYTES_MAX {
        return Err(FilterError::InvalidShare);
    }
    Ok(FilterKind::Shared(SharedFilter {
        group,
        filter: inner,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn expect_match(filter: &str, topic: &str, want: bool) {
        assert!(valid_filter(filter), "filter {filter:?} should be valid");
        assert!(valid_topic_name(topic), "topic {topic:?} should be valid");
        assert_eq!(
            matches(filter, topic),
            want,
            "matches({filter:?}, {topic:?})"
        );
    }

    #[test]
    fn matching_table() {
        let table = [
            // MQTT 3.1.1 §4.7.1.2 and §4.7.1.3, MQTT 5 §4.7.2.
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/tennis/player1/#", "sport/tennis/player2", false),
            ("sport/#", "sport", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/+", "$SYS/x", true),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("#", "a", true),
            ("#", "/", true),
            ("+", "a", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("A", "a", false),
            ("a/#", "b", false),
            ("x/$y", "x/$y", true),
            ("+/$y", "x/$y", true),
        ];
        for (filter, topic, want) in table {
            expect_match(filter, topic, want);
        }
    }

    #[test]
    fn filter_validation_table() {
        let deepest = vec!["+"; TOPIC_LEVELS_MAX].join("/");
        let too_deep = vec!["+"; TOPIC_LEVELS_MAX + 1].join("/");
        let longest = "a".repeat(TOPIC_BYTES_MAX);
        let too_long = "a".repeat(TOPIC_BYTES_MAX + 1);
        let table: [(&str, bool); 24] = [
            ("sport/tennis/player1/#", true),
            ("sport/#", true),
            ("#", true),
            ("+", true),
            ("+/tennis/#", true),
            ("sport/+/player1", true),
            ("/", true),
            ("//", true),
            ("$SYS/#", true),
            ("$share/g/t", true),
            ("a b/ü/€", true),
            (&deepest, true),
            (&longest, true),
            ("sport/tennis#", false),
            ("sport/tennis/#/ranking", false),
            ("sport+", false),
            ("sport/+x", false),
            ("#/", false),
            ("##", false),
            ("", false),
            ("a/\0/b", false),
            ("\0", false),
            (&too_deep, false),
            (&too_long, false),
        ];
        for (filter, want) in table {
            assert_eq!(valid_filter(filter), want, "valid_filter({filter:.40?})");
        }
    }

    #[test]
    fn topic_name_validation_table() {
        let deepest = vec!["x"; TOPIC_LEVELS_MAX].join("/");
        let too_deep = vec!["x"; TOPIC_LEVELS_MAX + 1].join("/");
        let table: [(&str, bool); 12] = [
            ("sport/tennis/player1", true),
            ("/", true),
            ("/finance", true),
            ("$SYS/x", true),
            (&deepest, true),
            ("", false),
            ("a/+", false),
            ("a/#", false),
            ("sport+", false),
            ("a\0", false),
            (&too_deep, false),
            (&"/".repeat(65_535), false),
        ];
        for (topic, want) in table {
            assert_eq!(
                valid_topic_name(topic),
                want,
                "valid_topic_name({topic:.40?})"
            );
        }
    }

    #[test]
    fn shared_filter_table() {
        let shared = |group, filter| Ok(FilterKind::Shared(SharedFilter { group, filter }));
        let table = [
            ("$share/g/t", shared("g", "t")),
            ("$share/group/a/+/#", shared("group", "a/+/#")),
            ("$share/g/#", shared("g", "#")),
            ("$share/g//", shared("g", "/")),
            ("$share/ab", Err(FilterError::InvalidShare)),
            ("$share//t", Err(FilterError::InvalidShare)),
            ("$share/g", Err(FilterError::InvalidShare)),
            ("$share/g/", Err(FilterError::InvalidShare)),
            ("$share/g+/t", Err(FilterError::InvalidShare)),
            ("$share/g#/t", Err(FilterError::InvalidShare)),
            ("$share/g/a#", Err(FilterError::InvalidShare)),
            ("$share", Err(FilterError::InvalidShare)),
            ("$share/", Err(FilterError::InvalidShare)),
            ("$sharex/t", Ok(FilterKind::Normal("$sharex/t"))),
            ("a/$share/t", Ok(FilterKind::Normal("a/$share/t"))),
            ("sport/#", Ok(FilterKind::Normal("sport/#"))),
            ("sport/tennis#", Err(FilterError::Invalid)),
            ("", Err(FilterError::Invalid)),
        ];
        for (filter, want) in table {
            assert_eq!(parse_filter(filter), want, "parse_filter({filter:?})");
        }
        assert_eq!(parse_filter("$share/g/a/b").map(|k| k.filter()), Ok("a/b"));
    }

    #[test]
    fn newtypes_only_hold_valid_strings() {
        assert_eq!(TopicName::new("a/b").map(|t| t.as_str()), Some("a/b"));
        assert_eq!(TopicName::new("a/+"), None);
        assert_eq!(TopicFilter::new("a/+").map(|f| f.as_str()), Some("a/+"));
        assert_eq!(TopicFilter::new("a#"), None);
        let (f, t) = (TopicFilter::new("#"), TopicName::new("$SYS/x"));
        assert_eq!(f.zip(t).map(|(f, t)| f.matches(t)), Some(false));
    }

    #[test]
    fn levels_split_like_the_spec() {
        fn split(s: &str) -> Vec<&str> {
            levels(s).collect()
        }
        assert_eq!(split("a/b"), ["a", "b"]);
        assert_eq!(split("a//b"), ["a", "", "b"]);
        assert_eq!(split("/"), ["", ""]);
        assert_eq!(split(""), [""]);
        // Around the byte-scan / memchr boundary of `find_slash`.
        for n in [0, 1, 15, 16, 17, 40] {
            let long = format!(
                "{}/b/{}/{}",
                "a".repeat(n),
                "c".repeat(n),
                "/".repeat(n % 3)
            );
            assert_eq!(split(&long), long.split('/').collect::<Vec<_>>(), "{long}");
        }
    }

    /// The rules of [`valid_filter`] written level by level, as the spec states them.
    fn naive_valid_filter(f: &str) -> bool {
        let levels: Vec<&str> = f.split('/').collect();
        let last = levels.len() - 1;
        !f.is_empty()
            && !f.contains('\0')
            && levels.len() <= TOPIC_LEVELS_MAX
            && levels.iter().enumerate().all(|(i, l)| {
                (!l.contains('#') || (*l == "#" && i == last)) && (!l.contains('+') || *l == "+")
            })
    }

    fn naive_valid_topic_name(t: &str) -> bool {
        !t.is_empty() && !t.contains(['+', '#', '\0']) && t.split('/').count() <= TOPIC_LEVELS_MAX
    }

    proptest::proptest! {
        #[test]
        fn validation_matches_naive_rules(s in "[a/+#\0$]{0,12}", long in proptest::bool::ANY) {
            // `long` pushes the input past FILTER_SCAN_BYTES, onto the other code path.
            let s = if long { format!("{}/{s}", "x".repeat(FILTER_SCAN_BYTES)) } else { s };
            proptest::prop_assert_eq!(valid_filter(&s), naive_valid_filter(&s), "{:?}", s);
            proptest::prop_assert_eq!(valid_topic_name(&s), naive_valid_topic_name(&s), "{:?}", s);
        }
    }

    #[test]
    fn oracle_never_recurses_on_huge_input() {
        let huge = "/".repeat(65_535);
        assert!(matches("#", &huge));
        assert!(!matches("+", &huge));
    }
}
