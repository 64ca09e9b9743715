//! The subscription index of one shard: topic filter → one value, matched once per publish.
//!
//! Owns: a trie over filter levels. Each node has its exact-level children
//! ([`Children`]: a small boxed slice, or a seeded `HashMap` when wide), a `+` child slot and a `#`
//! slot. `#` is always the last level of a valid filter, so the `#` slot holds a value,
//! never a node. Values are stored without their filter: the filter is the path to them
//! (no caller of [`FilterTrie::for_each_match`] needs it, and a copy per trie cost a
//! subscription 32 bytes or more in each); [`FilterTrie::iter`] rebuilds it.
//!
//! Invariants:
//! * Every stored filter is valid ([`valid_filter`]), hence the trie is at most
//!   [`TOPIC_LEVELS_MAX`] deep, and every recursive walk here is bounded by that depth (a
//!   walk only descends into nodes that exist), whatever the length of the topic.
//! * No node without an entry, a `+` child or exact children survives a `remove`: churn
//!   does not leak memory. `len` counts entries.
//! * `for_each_match` allocates nothing and reports each matching filter exactly once.
//!
//! Must not touch: subscriber sets, sessions, the bus. Single-threaded; not `Sync` by intent.
//! Layout rationale and numbers: docs/decisions/0002-topic-trie.md.

use super::children::Children;
#[cfg(doc)]
use super::TOPIC_LEVELS_MAX;
use super::{split_level, valid_filter};

/// One trie node: 40 bytes whatever `V` is, so a small-children entry is 56 (16-byte key +
/// node), under one cache line.
#[derive(Debug)]
struct Node<V> {
    children: Children<Node<V>>,
    plus: Option<Box<Node<V>>>,
    /// The value of the filter ending at this node.
    value: Option<Box<V>>,
    /// The value of the filter ending at this node followed by `/#` (or `#` alone at the
    /// root).
    hash: Option<Box<V>>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: Children::new(),
            plus: None,
            value: None,
            hash: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.hash.is_none()
            && self.plus.is_none()
            && self.children.is_empty()
    }
}

/// Maps topic filters to one value each and finds every filter matching a topic name.
///
/// Filters are stored as given: validate them (and strip `$share/{group}/`) first with
/// [`super::parse_filter`]. Not thread-safe, by design: each shard owns its own.
#[derive(Debug)]
pub struct FilterTrie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for FilterTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> FilterTrie<V> {
    /// An empty trie.
    pub fn new() -> Self {
        FilterTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// The number of filters stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value stored for exactly this filter (no wildcard matching: `a/+` finds only the
    /// filter `a/+`).
    pub fn get(&self, filter: &str) -> Option<&V> {
        let mut node = &self.root;
        let mut rest = Some(filter);
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            match level {
                "#" if next.is_none() => return node.hash.as_deref(),
                "+" => node = node.plus.as_deref()?,
                _ => node = node.children.get(level)?,
            }
            rest = next;
        }
        node.value.as_deref()
    }

    /// The value stored for exactly this filter, mutably.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let mut node = &mut self.root;
        let mut rest = Some(filter);
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            match level {
                "#" if next.is_none() => return node.hash.as_deref_mut(),
                "+" => node = node.plus.as_deref_mut()?,
                _ => node = node.children.get_mut(level)?,
            }
            rest = next;
        }
        node.value.as_deref_mut()
    }

    /// The value for `filter`, inserted with `make` if the filter is not stored yet.
    ///
    /// # Panics
    /// If `filter` is not [`valid_filter`]. The caller validates (SUBSCRIBE decoding does),
    /// and the trie's bounded depth, which every walk relies on, depends on it.
    pub fn entry_or_insert_with(&mut self, filter: &str, make: impl FnOnce() -> V) -> &mut V {
        assert!(valid_filter(filter), "FilterTrie: invalid filter");
        let mut node = &mut self.root;
        let mut rest = Some(filter);
        let mut ends_with_hash = false;
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            match level {
                "#" => ends_with_hash = true,
                "+" => node = node.plus.get_or_insert_with(|| Box::new(Node::new())),
                _ => node = node.children.get_or_insert_with(level, Node::new),
            }
            rest = next;
        }
        let slot = if ends_with_hash {
            &mut node.hash
        } else {
            &mut node.value
        };
        if slot.is_none() {
            self.len += 1;
        }
        slot.get_or_insert_with(|| Box::new(make()))
    }

    /// Removes `filter` and returns its value, pruning every node left empty.
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        let removed = remove_in(&mut self.root, Some(filter))?;
        self.len -= 1;
        Some(removed)
    }

    /// Calls `f(value)` once for every stored filter matching the topic name `topic` (per
    /// [`super::matches`], including the `$` rule). Allocates nothing; the recursion depth
    /// is bounded by the trie depth, not by the topic.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&V)) {
        let root = &self.root;
        let (level, next) = split_level(topic);
        if !topic.starts_with('$') {
            emit(&root.hash, &mut f);
            if let Some(plus) = root.plus.as_deref() {
                match_in(plus, next, &mut f);
            }
        }
        if let Some(child) = root.children.get(level) {
            match_in(child, next, &mut f);
        }
    }

    /// Every `(filter, value)` pair, in no particular order. Rebuilds and allocates each
    /// filter string; meant for rebuilding and replication, not for the publish path.
    pub fn iter(&self) -> impl Iterator<Item = (String, &V)> {
        let mut entries = Vec::with_capacity(self.len);
        collect(&self.root, &mut String::new(), &mut entries);
        entries.into_iter()
    }

    /// The number of nodes including the root, to check that `remove` prunes.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        count_nodes(&self.root)
    }
}

#[inline]
fn emit<V>(slot: &Option<Box<V>>, f: &mut impl FnMut(&V)) {
    if let Some(v) = slot {
        f(v);
    }
}

/// `node` has consumed the topic levels before `rest` (`None`: all of them).
fn match_in<V>(node: &Node<V>, rest: Option<&str>, f: &mut impl FnMut(&V)) {
    // `x/#` matches `x` itself as well as everything below it.
    emit(&node.hash, f);
    let Some(s) = rest else {
        emit(&node.value, f);
        return;
    };
    let (level, next) = split_level(s);
    if let Some(plus) = node.plus.as_deref() {
        match_in(plus, next, f);
    }
    if let Some(child) = node.children.get(level) {
        match_in(child, next, f);
    }
}

/// Removes the entry for `rest` below `node`; prunes the child it came through if emptied.
fn remove_in<V>(node: &mut Node<V>, rest: Option<&str>) -> Option<V> {
    let Some(s) = rest else {
        return node.value.take().map(|v| *v);
    };
    let (level, next) = split_level(s);
    match level {
        "#" if next.is_none() => node.hash.take().map(|v| *v),
        "+" => {
            let plus = node.plus.as_deref_mut()?;
            let removed = remove_in(plus, next)?;
            if plus.is_empty() {
                node.plus = None;
            }
            Some(removed)
        }
        _ => {
            let child = node.children.get_mut(level)?;
            let removed = remove_in(child, next)?;
            if child.is_empty() {
                node.children.remove(level);
            }
            Some(removed)
        }
    }
}

/// Pushes every entry below `node`, whose filter prefix is `path` (empty at the root,
/// else the levels so far followed by `/`). `path` is restored before returning.
fn collect<'a, V>(node: &'a Node<V>, path: &mut String, out: &mut Vec<(String, &'a V)>) {
    if let Some(v) = node.value.as_deref() {
        // The filter ending here is the path without its trailing `/`.
        out.push((path[..path.len().saturating_sub(1)].to_string(), v));
    }
    if let Some(v) = node.hash.as_deref() {
        out.push((format!("{path}#"), v));
    }
    let len = path.len();
    let children = node.plus.as_deref().map(|p| ("+", p));
    for (level, child) in children.into_iter().chain(node.children.iter()) {
        path.push_str(level);
        path.push('/');
        collect(child, path, out);
        path.truncate(len);
    }
}

#[cfg(test)]
fn count_nodes<V>(node: &Node<V>) -> usize {
    let plus = node.plus.as_deref().map_or(0, count_nodes);
    1 + plus
        + node
            .children
            .iter()
            .map(|(_, c)| count_nodes(c))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::super::{levels, matches, valid_topic_name, TOPIC_LEVELS_MAX};
    use super::*;
    use proptest::prelude::*;

    /// The filters matching `topic`, from a trie whose values are their own filters.
    fn matched(trie: &FilterTrie<String>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |filter| {
            assert_eq!(trie.get(filter), Some(filter));
            out.push(filter.clone());
        });
        out.sort();
        out
    }

    fn oracle(filters: &[String], topic: &str) -> Vec<String> {
        let mut out: Vec<String> = filters
            .iter()
            .filter(|f| matches(f, topic))
            .cloned()
            .collect();
        out.sort();
        out
    }

    fn trie_of(filters: &[&str]) -> FilterTrie<usize> {
        let mut trie = FilterTrie::new();
        for (i, f) in filters.iter().enumerate() {
            *trie.entry_or_insert_with(f, || i) = i;
        }
        trie
    }

    /// A trie mapping each filter to itself.
    fn named_trie_of(filters: &[&str]) -> FilterTrie<String> {
        let mut trie = FilterTrie::new();
        for f in filters {
            trie.entry_or_insert_with(f, || f.to_string());
        }
        trie
    }

    #[test]
    fn spec_examples_through_the_trie() {
        let filters = [
            "sport/tennis/player1/#",
            "sport/#",
            "+/+",
            "/+",
            "+",
            "#",
            "$SYS/#",
            "+/monitor/Clients",
        ];
        let trie = named_trie_of(&filters);
        let owned: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        for topic in [
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "/finance",
            "finance",
            "$SYS/x",
            "$SYS/monitor/Clients",
            "a/monitor/Clients",
        ] {
            assert_eq!(
                matched(&trie, topic),
                oracle(&owned, topic),
                "topic {topic}"
            );
        }
        assert_eq!(matched(&trie, "$SYS/x"), vec!["$SYS/#".to_string()]);
    }

    #[test]
    fn get_insert_remove_exact() {
        let mut trie = trie_of(&["a/+", "a/#", "a", "#", "+"]);
        assert_eq!(trie.len(), 5);
        assert_eq!(trie.get("a/+"), Some(&0));
        assert_eq!(trie.get("a/b"), None);
        assert_eq!(trie.get("a/#/x"), None);
        *trie.get_mut("a").unwrap() += 10;
        assert_eq!(trie.get("a"), Some(&12));
        assert_eq!(*trie.entry_or_insert_with("a", || 99), 12);
        assert_eq!(trie.remove("a/b"), None);
        assert_eq!(trie.remove("a/#"), Some(1));
        assert_eq!(trie.remove("a/#"), None);
        let mut all: Vec<_> = trie.iter().map(|(f, &v)| (f, v)).collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("#".into(), 3),
                ("+".into(), 4),
                ("a".into(), 12),
                ("a/+".into(), 0)
            ]
        );
        for f in ["#", "+", "a", "a/+"] {
            assert!(trie.remove(f).is_some());
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn node_stays_small_whatever_the_value() {
        // The layout the decision record measured: the child list is 16 bytes (the enum's
        // tag in the slice pointer's niche), a node 40, a small-children entry 56.
        assert_eq!(std::mem::size_of::<Children<Node<u8>>>(), 16);
        assert_eq!(std::mem::size_of::<Node<[u64; 8]>>(), 40);
        assert_eq!(std::mem::size_of::<Node<()>>(), 40);
        assert_eq!(std::mem::size_of::<(Box<str>, Node<u8>)>(), 56);
    }

    #[test]
    #[should_panic(expected = "invalid filter")]
    fn insert_rejects_invalid_filter() {
        FilterTrie::new().entry_or_insert_with("a/#/b", || 0);
    }

    #[test]
    fn deep_topic_does_not_recurse_past_the_trie() {
        let deep_filter = vec!["+"; TOPIC_LEVELS_MAX].join("/");
        let trie = named_trie_of(&["#", "+/#", &deep_filter, "a"]);
        let huge = "/".repeat(65_535);
        assert!(!valid_topic_name(&huge));
        assert_eq!(matched(&trie, &huge), ["#", "+/#"]);
        let max_topic = vec!["x"; TOPIC_LEVELS_MAX].join("/");
        assert_eq!(levels(&max_topic).count(), TOPIC_LEVELS_MAX);
        assert_eq!(matched(&trie, &max_topic).len(), 3);
    }

    /// A node wide enough to split its children map several times still matches as the
    /// linear scan does, and prunes back to the root.
    #[test]
    fn wide_node_matches_linear_scan() {
        let n = super::super::wide::SEGMENT_MAX * 3;
        let mut filters: Vec<String> = (0..n).map(|i| format!("big/{i}")).collect();
        filters.extend((0..n).step_by(97).map(|i| format!("big/{i}/#")));
        filters.extend(["big/+", "+/7", "#"].map(String::from));
        let mut trie = FilterTrie::new();
        for f in &filters {
            trie.entry_or_insert_with(f, || f.clone());
        }
        let topics: Vec<String> = (0..n + 10)
            .step_by(401)
            .flat_map(|i| [format!("big/{i}"), format!("big/{i}/x")])
            .chain(["big/7".to_string(), "big".to_string()])
            .collect();
        check_all(&trie, &filters, &topics);
        for f in &filters {
            assert_eq!(trie.remove(f).as_ref(), Some(f));
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
    }

    const FILTER_LEVELS: [&str; 7] = ["a", "b", "", "$sys", "+", "#", "a"];
    const TOPIC_LEVELS: [&str; 4] = ["a", "b", "", "$sys"];

    fn joined(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 1..=max).prop_map(|v| v.join("/"))
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        joined(&FILTER_LEVELS, 4).prop_filter("valid filter", |f| valid_filter(f))
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        joined(&TOPIC_LEVELS, 5).prop_filter("valid topic", |t| valid_topic_name(t))
    }

    fn check_all(trie: &FilterTrie<String>, stored: &[String], topics: &[String]) {
        assert_eq!(trie.len(), stored.len());
        let mut rebuilt: Vec<String> = trie
            .iter()
            .map(|(f, v)| {
                assert_eq!(&f, v, "iter rebuilds the filter");
                f
            })
            .collect();
        rebuilt.sort();
        let mut expected = stored.to_vec();
        expected.sort();
        assert_eq!(rebuilt, expected);
        for t in topics {
            assert_eq!(matched(trie, t), oracle(stored, t), "topic {t:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn trie_matches_linear_scan(
            filters in prop::collection::vec(filter_strategy(), 0..40),
            topics in prop::collection::vec(topic_strategy(), 1..20),
            keep in prop::collection::vec(any::<bool>(), 40),
        ) {
            let mut trie = FilterTrie::new();
            let mut stored: Vec<String> = Vec::new();
            for f in &filters {
                trie.entry_or_insert_with(f, || f.clone());
                if !stored.contains(f) {
                    stored.push(f.clone());
                }
            }
            check_all(&trie, &stored, &topics);
            let (kept, dropped): (Vec<_>, Vec<_>) =
                stored.iter().cloned().zip(keep.iter().cycle()).partition(|(_, k)| **k);
            for (f, _) in &dropped {
                prop_assert!(trie.remove(f).is_some());
                prop_assert!(trie.remove(f).is_none());
            }
            let kept: Vec<String> = kept.into_iter().map(|(f, _)| f).collect();
            check_all(&trie, &kept, &topics);
            for f in &kept {
                prop_assert!(trie.remove(f).is_some());
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.node_count(), 1);
        }
    }
}
