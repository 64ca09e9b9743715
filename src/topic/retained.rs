//! The retained-message index of one shard: concrete topic name → one value, queried with a
//! filter at subscribe time.
//!
//! Owns: a tree over topic levels ([`Ordered`] per node: a sorted `Vec`, or a `BTreeMap`
//! when wide, so children come in level order). A filter walk descends only into matching
//! branches: `a/+/c` visits the children of `a` and one exact lookup below each, never the
//! whole tree. Topic strings are not stored: [`TopicTree::for_each_matching`] rebuilds each
//! matching topic in one reused `String`, and the paced walk of SUBSCRIBE
//! ([`TopicTree::walk_matching`], [`MatchCursor`]) builds none.
//!
//! Invariants:
//! * Every stored topic is a valid topic name ([`valid_topic_name`]), so the tree is at most
//!   [`TOPIC_LEVELS_MAX`] deep and every recursive walk is bounded by that depth.
//! * No valueless leaf survives a `remove`: clearing retained messages does not leak nodes.
//!
//! Must not touch: message contents or expiry (the value type is the caller's), sessions,
//! the bus. Single-threaded; not `Sync` by intent.

use super::ordered::Ordered;
#[cfg(doc)]
use super::TOPIC_LEVELS_MAX;
use super::{split_level, valid_topic_name};

mod cursor;
pub use cursor::MatchCursor;

#[derive(Debug)]
struct Node<V> {
    children: Ordered<Node<V>>,
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: Ordered::new(),
            value: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none() && self.children.is_empty()
    }
}

/// Maps topic names to one value each (the retained message) and finds every stored topic
/// matched by a filter.
#[derive(Debug)]
pub struct TopicTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> TopicTree<V> {
    /// An empty tree.
    pub fn new() -> Self {
        TopicTree {
            root: Node::new(),
            len: 0,
        }
    }

    /// The number of topics stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` for `topic`, returning the value it replaces.
    ///
    /// # Panics
    /// If `topic` is not [`valid_topic_name`]. The caller validates (PUBLISH decoding does),
    /// and the tree's bounded depth, which every walk relies on, depends on it.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        assert!(valid_topic_name(topic), "TopicTree: invalid topic name");
        let mut node = &mut self.root;
        let mut rest = Some(topic);
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            node = node.children.get_or_insert_with(level, Node::new);
            rest = next;
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value stored for exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        let mut rest = Some(topic);
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            node = node.children.get(level)?;
            rest = next;
        }
        node.value.as_ref()
    }

    /// Removes `topic` and returns its value, pruning every node left empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let removed = remove_in(&mut self.root, topic)?;
        self.len -= 1;
        Some(removed)
    }

    /// Might `filter` match a stored topic? False only when that is certain from the
    /// filter's leading literal levels (the tree is empty, or has no node for them, or no
    /// value at a filter without wildcards); true otherwise, even when a walk would find
    /// nothing. At most one lookup per level before the first wildcard.
    pub fn may_match(&self, filter: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut node = &self.root;
        let mut rest = Some(filter);
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            if level == "+" || level == "#" {
                return true;
            }
            let Some(child) = node.children.get(level) else {
                return false;
            };
            node = child;
            rest = next;
        }
        node.value.is_some()
    }

    /// Calls `f(topic, value)` for every stored topic matched by `filter` (per
    /// [`super::matches`], including the `$` rule). `filter` should be valid; an invalid one
    /// gives unspecified matches but never panics. Allocates one `String` per call.
    pub fn for_each_matching(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let mut path = String::new();
        let walk = Walk {
            path: &mut path,
            f: &mut f,
        };
        walk.filter_at_root(&self.root, filter);
    }

    /// Calls `f(topic, value)` for every stored topic, `$` topics included, in no particular
    /// order (for replication and persistence). Allocates one `String` per call.
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut path = String::new();
        let mut walk = Walk {
            path: &mut path,
            f: &mut f,
        };
        walk.subtree(&self.root, true, false);
    }

    /// The number of nodes including the root, to check that `remove` prunes.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        count_nodes(&self.root)
    }
}

/// The state of one filter walk: the topic built so far and the callback.
struct Walk<'w, F> {
    path: &'w mut String,
    f: &'w mut F,
}

impl<F> Walk<'_, F> {
    /// The root level needs the `$` rule: a wildcard first level skips `$` topics.
    fn filter_at_root<V>(mut self, root: &Node<V>, filter: &str)
    where
        F: FnMut(&str, &V),
    {
        let (level, next) = split_level(filter);
        match level {
            "#" => self.subtree(root, true, true),
            "+" => self.each_child(root, true, |w, child| w.filter(child, next)),
            _ => {
                if let Some(child) = root.children.get(level) {
                    self.descend(level, true, |w| w.filter(child, next));
                }
            }
        }
    }

    /// `node` is the topic built so far, `rest` the unconsumed filter (`None`: all of it).
    fn filter<V>(&mut self, node: &Node<V>, rest: Option<&str>)
    where
        F: FnMut(&str, &V),
    {
        let Some(s) = rest else {
            self.emit(node);
            return;
        };
        let (level, next) = split_level(s);
        match level {
            // `x/#` matches `x` itself and everything below it.
            "#" => self.subtree(node, false, false),
            "+" => self.each_child(node, false, |w, child| w.filter(child, next)),
            _ => {
                if let Some(child) = node.children.get(level) {
                    self.descend(level, false, |w| w.filter(child, next));
                }
            }
        }
    }

    /// Emits `node` and every topic below it.
    fn subtree<V>(&mut self, node: &Node<V>, at_root: bool, skip_dollar: bool)
    where
        F: FnMut(&str, &V),
    {
        self.emit(node);
        self.each_child_filtered(node, at_root, skip_dollar, |w, child| {
            w.subtree(child, false, false)
        });
    }

    fn each_child<V>(
        &mut self,
        node: &Node<V>,
        at_root: bool,
        go: impl FnMut(&mut Self, &Node<V>),
    ) {
        self.each_child_filtered(node, at_root, at_root, go);
    }

    fn each_child_filtered<V>(
        &mut self,
        node: &Node<V>,
        at_root: bool,
        skip_dollar: bool,
        mut go: impl FnMut(&mut Self, &Node<V>),
    ) {
        for (level, child) in node.children.iter() {
            if !(skip_dollar && level.starts_with('$')) {
                self.descend(level, at_root, |w| go(w, child));
            }
        }
    }

    /// Appends `level` to the topic, runs `go`, and restores the topic.
    fn descend(&mut self, level: &str, at_root: bool, go: impl FnOnce(&mut Self)) {
        let len = self.path.len();
        if !at_root {
            self.path.push('/');
        }
        self.path.push_str(level);
        go(self);
        self.path.truncate(len);
    }

    fn emit<V>(&mut self, node: &Node<V>)
    where
        F: FnMut(&str, &V),
    {
        if let Some(v) = &node.value {
            (self.f)(self.path.as_str(), v);
        }
    }
}

/// Removes the value for `rest` below `node`; prunes the child it came through if emptied.
fn remove_in<V>(node: &mut Node<V>, rest: &str) -> Option<V> {
    let (level, next) = split_level(rest);
    let child = node.children.get_mut(level)?;
    let removed = match next {
        None => child.value.take()?,
        Some(next) => remove_in(child, next)?,
    };
    if child.is_empty() {
        node.children.remove(level);
    }
    Some(removed)
}

#[cfg(test)]
fn count_nodes<V>(node: &Node<V>) -> usize {
    1 + node
        .children
        .iter()
        .map(|(_, c)| count_nodes(c))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::super::{matches, valid_filter, valid_topic_name, TOPIC_LEVELS_MAX};
    use super::*;
    use proptest::prelude::*;

    fn matching(tree: &TopicTree<usize>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.for_each_matching(filter, |topic, &v| {
            assert_eq!(tree.get(topic), Some(&v), "topic {topic:?} rebuilt wrongly");
            out.push(topic.to_string());
        });
        out.sort();
        out
    }

    fn oracle(topics: &[String], filter: &str) -> Vec<String> {
        let mut out: Vec<String> = topics
            .iter()
            .filter(|t| matches(filter, t))
            .cloned()
            .collect();
        out.sort();
        out
    }

    fn tree_of(topics: &[&str]) -> TopicTree<usize> {
        let mut tree = TopicTree::new();
        for (i, t) in topics.iter().enumerate() {
            tree.insert(t, i);
        }
        tree
    }

    #[test]
    fn spec_examples_through_the_tree() {
        let topics = [
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "/finance",
            "finance",
            "$SYS/x",
            "$SYS/monitor/Clients",
            "a/monitor/Clients",
            "/",
            "a//b",
        ];
        let tree = tree_of(&topics);
        let owned: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        for filter in [
            "sport/tennis/player1/#",
            "sport/#",
            "+/+",
            "/+",
            "+",
            "#",
            "$SYS/#",
            "+/monitor/Clients",
            "a/+/b",
            "+/#",
            "/#",
        ] {
            assert_eq!(
                matching(&tree, filter),
                oracle(&owned, filter),
                "filter {filter}"
            );
        }
        assert_eq!(
            matching(&tree, "$SYS/#"),
            ["$SYS/monitor/Clients", "$SYS/x"]
        );
        assert_eq!(matching(&tree, "+/monitor/Clients"), ["a/monitor/Clients"]);
    }

    #[test]
    fn insert_replace_remove() {
        let mut tree = tree_of(&["a/b", "a"]);
        assert_eq!(tree.insert("a/b", 5), Some(0));
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.get("a/b"), Some(&5));
        assert_eq!(tree.get("a/b/c"), None);
        assert_eq!(tree.remove("a/b/c"), None);
        assert_eq!(tree.remove("a"), Some(1));
        assert_eq!(tree.remove("a"), None);
        assert_eq!(tree.node_count(), 3);
        assert_eq!(tree.remove("a/b"), Some(5));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn for_each_includes_dollar_topics() {
        let tree = tree_of(&["$SYS/x", "a", "/"]);
        let mut all = Vec::new();
        tree.for_each(|t, _| all.push(t.to_string()));
        all.sort();
        assert_eq!(all, ["$SYS/x", "/", "a"]);
    }

    #[test]
    fn huge_filter_is_bounded_by_tree_depth() {
        let deepest = vec!["x"; TOPIC_LEVELS_MAX].join("/");
        let tree = tree_of(&[&deepest, "x"]);
        let huge = vec!["+"; 40_000].join("/");
        assert!(!valid_filter(&huge));
        assert!(matching(&tree, &huge).is_empty());
        assert_eq!(matching(&tree, "x/#").len(), 2);
    }

    #[test]
    #[should_panic(expected = "invalid topic name")]
    fn insert_rejects_wildcards() {
        TopicTree::new().insert("a/+", 0);
    }

    const FILTER_LEVELS: [&str; 6] = ["a", "b", "", "$sys", "+", "#"];
    const TOPIC_LEVELS: [&str; 4] = ["a", "b", "", "$sys"];

    fn joined(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 1..=max).prop_map(|v| v.join("/"))
    }

    fn check_all(tree: &TopicTree<usize>, stored: &[String], filters: &[String]) {
        assert_eq!(tree.len(), stored.len());
        for f in filters {
            let want = oracle(stored, f);
            assert_eq!(matching(tree, f), want, "filter {f:?}");
            // `may_match` may say yes for nothing, never no for something.
            assert!(tree.may_match(f) || want.is_empty(), "filter {f:?}");
        }
    }

    #[test]
    fn may_match_says_no_only_from_the_literal_levels() {
        assert!(!TopicTree::<usize>::new().may_match("#"), "empty");
        let tree = tree_of(&["a/b/c", "$SYS/x"]);
        for f in ["x/#", "a/x/+", "a/b", "a/b/c/d", "b/+/c"] {
            assert!(!tree.may_match(f), "{f}");
        }
        // A wildcard stops the proof: `+/x` matches nothing here but may.
        for f in ["#", "+/x", "a/#", "a/b/+", "a/b/c", "a/b/c/#", "$SYS/x"] {
            assert!(tree.may_match(f), "{f}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn tree_matches_linear_scan(
            topics in prop::collection::vec(
                joined(&TOPIC_LEVELS, 4).prop_filter("valid", |t| valid_topic_name(t)), 0..40),
            filters in prop::collection::vec(
                joined(&FILTER_LEVELS, 5).prop_filter("valid", |f| valid_filter(f)), 1..20),
            keep in prop::collection::vec(any::<bool>(), 40),
        ) {
            let mut tree = TopicTree::new();
            let mut stored: Vec<String> = Vec::new();
            for (i, t) in topics.iter().enumerate() {
                tree.insert(t, i);
                if !stored.contains(t) {
                    stored.push(t.clone());
                }
            }
            check_all(&tree, &stored, &filters);
            let mut kept = Vec::new();
            for (t, k) in stored.iter().zip(keep.iter().cycle()) {
                if *k {
                    kept.push(t.clone());
                } else {
                    prop_assert!(tree.remove(t).is_some());
                    prop_assert!(tree.remove(t).is_none());
                }
            }
            check_all(&tree, &kept, &filters);
            for t in &kept {
                prop_assert!(tree.remove(t).is_some());
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.node_count(), 1);
        }
    }
}
