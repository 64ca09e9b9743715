//! A filter walk of the retained tree that stops after a budget of steps and resumes next
//! turn, whatever the tree did meanwhile.
//!
//! Owns: [`MatchCursor`], the owned position of one walk between slices: the filter and,
//! per node on the way down, the last child level it yielded. Invariants: the walk visits
//! nodes in one fixed order (depth first, children in ascending level order: the order
//! [`Ordered`](super::super::ordered::Ordered) keeps), and a resumed walk continues
//! strictly after the last position it yielded, so the positions it visits only move
//! forward. Hence, across slices with inserts and removes between them:
//! * a topic stored for the whole walk is yielded exactly once;
//! * a topic removed before the walk reaches it is not yielded, one removed after was;
//! * a topic inserted during the walk is yielded if it lies after the walk's position
//!   (then its newest value), not if it lies behind; never twice.
//!
//! A slice does at most `budget` steps (a step enters one node, or skips one `$` child
//! at the root) plus one lookup per level of the saved path (at most
//! [`TOPIC_LEVELS_MAX`](super::super::TOPIC_LEVELS_MAX)) to find its place again. It
//! allocates the saved path once per slice, never per node: no topic string is built.
//! Must not touch: the values (the caller's), sessions, pacing decisions.

use super::super::ordered::OrderedIter;
use super::super::split_level;
use super::{Node, TopicTree};

/// Where a paced walk of the topics matching one filter stands between slices.
#[derive(Debug)]
pub struct MatchCursor {
    filter: Box<str>,
    /// Per node on the stack, from the root down: the last child level it yielded
    /// (`None`: none yet). Node `i + 1` is node `i`'s last child. Empty before the first
    /// slice and after the last.
    saved: Vec<Option<Box<str>>>,
    done: bool,
}

impl MatchCursor {
    /// A walk of the topics matching `filter`, not started.
    pub fn new(filter: &str) -> Self {
        MatchCursor {
            filter: filter.into(),
            saved: Vec::new(),
            done: false,
        }
    }

    /// True once every match was yielded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The filter walked.
    pub fn filter(&self) -> &str {
        &self.filter
    }
}

/// What the filter asks of a node's children.
#[derive(Clone, Copy)]
enum Mode<'f> {
    /// The filter left for the node (`None`: it ends here).
    Filter(Option<&'f str>),
    /// Below a `#`: every node matches.
    Subtree,
}

/// The children a node's frame still has to visit.
enum Kids<'t, V> {
    None,
    /// An exact filter level: one lookup.
    One(Option<(&'t str, &'t Node<V>)>),
    /// A wildcard: every child, in level order.
    Many(OrderedIter<'t, Node<V>>),
}

/// One node on the walk's stack during a slice.
struct Frame<'t, 'f, V> {
    kids: Kids<'t, V>,
    /// What the filter asks of the children.
    child_mode: Mode<'f>,
    /// Skip `$` children (a wildcard first level [MQTT-4.7.2-1]).
    skip_dollar: bool,
    /// The last child level yielded.
    last: Option<&'t str>,
}

impl<'t, 'f, V> Frame<'t, 'f, V> {
    /// The frame of `node` reached with `mode`, its children starting after `after`; and
    /// whether `node` itself matches.
    fn open(
        node: &'t Node<V>,
        mode: Mode<'f>,
        at_root: bool,
        after: Option<&'t str>,
    ) -> (bool, Self) {
        let many = |child_mode: Mode<'f>| Frame {
            kids: Kids::Many(node.children.iter_after(after)),
            child_mode,
            skip_dollar: at_root,
            last: after,
        };
        match mode {
            Mode::Subtree => (true, many(Mode::Subtree)),
            Mode::Filter(None) => (
                true,
                Frame {
                    kids: Kids::None,
                    child_mode: mode,
                    skip_dollar: false,
                    last: after,
                },
            ),
            Mode::Filter(Some(rest)) => {
                let (level, next) = split_level(rest);
                match level {
                    // `x/#` matches `x` itself and everything below it.
                    "#" => (true, many(Mode::Subtree)),
                    "+" => (false, many(Mode::Filter(next))),
                    _ => {
                        let one = match after {
                            Some(_) => None,
                            None => node.children.get_key_value(level),
                        };
                        let frame = Frame {
                            kids: Kids::One(one),
                            child_mode: Mode::Filter(next),
                            skip_dollar: false,
                            last: after,
                        };
                        (false, frame)
                    }
                }
            }
        }
    }

    fn next_kid(&mut self) -> Option<(&'t str, &'t Node<V>)> {
        let kid = match &mut self.kids {
            Kids::None => None,
            Kids::One(one) => one.take(),
            Kids::Many(it) => it.next(),
        }?;
        self.last = Some(kid.0);
        Some(kid)
    }
}

impl<V> TopicTree<V> {
    /// Walks on from `cursor` for at most `budget` steps, calling `f` with the value of
    /// every matching topic (per [`super::super::matches`], including the `$` rule), and
    /// returns true when the walk is done. A cursor may be resumed after any change to
    /// the tree; see the module doc for what a change does to the matches. `filter`
    /// should be valid; an invalid one gives unspecified matches but never panics.
    pub fn walk_matching(
        &self,
        cursor: &mut MatchCursor,
        budget: usize,
        mut f: impl FnMut(&V),
    ) -> bool {
        if cursor.done {
            return true;
        }
        let budget = budget.max(1);
        let saved = std::mem::take(&mut cursor.saved);
        let mut stack = self.resume(&cursor.filter, &saved);
        let mut steps = 0;
        while let Some(top) = stack.last_mut() {
            if steps >= budget {
                cursor.saved = stack.iter().map(|fr| fr.last.map(Box::from)).collect();
                return false;
            }
            let Some((level, child)) = top.next_kid() else {
                stack.pop();
                continue;
            };
            steps += 1;
            if top.skip_dollar && level.starts_with('$') {
                continue;
            }
            let (matched, frame) = Frame::open(child, top.child_mode, false, None);
            if matched {
                if let Some(v) = &child.value {
                    f(v);
                }
            }
            stack.push(frame);
        }
        cursor.done = true;
        true
    }

    /// The stack of a walk of `filter` at position `saved` (the root's frame alone for
    /// an empty one). A node of the path that is gone ends the descent there: its
    /// parent's frame resumes after it.
    fn resume<'t, 'f>(
        &'t self,
        filter: &'f str,
        saved: &'t [Option<Box<str>>],
    ) -> Vec<Frame<'t, 'f, V>> {
        let after = |i: usize| saved.get(i).and_then(|a| a.as_deref());
        let mut stack = Vec::with_capacity(saved.len().max(4));
        let (_, root) = Frame::open(&self.root, Mode::Filter(Some(filter)), true, after(0));
        stack.push(root);
        let mut node = &self.root;
        for i in 1..saved.len() {
            let Some(level) = after(i - 1) else { break };
            let Some(child) = node.children.get(level) else {
                break;
            };
            let mode = stack[i - 1].child_mode;
            let (_, frame) = Frame::open(child, mode, false, after(i));
            stack.push(frame);
            node = child;
        }
        stack
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::super::super::{matches, valid_filter, valid_topic_name};
    use super::*;
    use proptest::prelude::*;

    /// Every value a walk of `filter` in slices of `budget` yields, calling `between`
    /// after each slice (it may change the tree).
    fn walk_all(
        tree: &mut TopicTree<usize>,
        filter: &str,
        budget: usize,
        mut between: impl FnMut(&mut TopicTree<usize>, usize),
    ) -> Vec<usize> {
        let mut cursor = MatchCursor::new(filter);
        let mut got = Vec::new();
        for slice in 0.. {
            assert!(slice < 1_000_000, "the walk never ends");
            let mut n = 0;
            let done = tree.walk_matching(&mut cursor, budget, |&v| {
                got.push(v);
                n += 1;
            });
            assert!(n <= budget, "{n} matches in a slice of {budget} steps");
            if done {
                assert!(cursor.is_done());
                assert!(tree.walk_matching(&mut cursor, budget, |_| panic!("done")));
                return got;
            }
            between(tree, slice);
        }
        unreachable!()
    }

    /// A tree of `topics` whose values are their indices.
    fn tree_of(topics: &[String]) -> TopicTree<usize> {
        let mut tree = TopicTree::new();
        for (i, t) in topics.iter().enumerate() {
            tree.insert(t, i);
        }
        tree
    }

    #[test]
    fn slices_of_every_size_yield_each_match_once() {
        let mut topics: Vec<String> = (0..300).map(|i| format!("ret/{i}")).collect();
        topics.extend((0..40).map(|i| format!("ret/{i}/x")));
        topics.extend(["ret", "$SYS/ret", "other/1", "/ret"].map(String::from));
        let mut tree = tree_of(&topics);
        for filter in [
            "ret/#", "#", "+/+", "ret/+/x", "ret/17", "+", "$SYS/#", "/+",
        ] {
            let mut want: Vec<usize> = (0..topics.len())
                .filter(|&i| matches(filter, &topics[i]))
                .collect();
            want.sort_unstable();
            for budget in [1, 2, 3, 7, 64, 1024] {
                let mut got = walk_all(&mut tree, filter, budget, |_, _| {});
                got.sort_unstable();
                assert_eq!(got, want, "filter {filter}, budget {budget}");
            }
        }
    }

    /// A wide node (a `BTreeMap`): the child the walk stopped in is removed, children are
    /// added behind and ahead of it, and one ahead is cleared, between slices.
    #[test]
    fn changes_between_slices_in_a_wide_node() {
        let topics: Vec<String> = (0..1000).map(|i| format!("w/{i:04}")).collect();
        let mut tree = tree_of(&topics);
        let got = walk_all(&mut tree, "w/+", 10, |tree, slice| {
            if slice == 5 {
                // Six slices of 10 steps: `w`, then w/0000 .. w/0058. Remove the node
                // the walk stands on: it resumes after it, at w/0059.
                assert_eq!(tree.remove("w/0058"), Some(58));
                tree.insert("w/0010x", 5000); // behind: not yielded
                tree.insert("w/0500x", 5001); // ahead: yielded
                assert_eq!(tree.remove("w/0700"), Some(700)); // ahead: not yielded
                tree.insert("w/0800", 5002); // replaced ahead: the new value
            }
        });
        let mut want: Vec<usize> = (0..1000).filter(|&i| i != 700 && i != 800).collect();
        want.extend([5001, 5002]);
        want.sort_unstable();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, want);
        assert!(got.windows(2).all(|w| w[0] != w[1]));
    }

    const LEVELS: [&str; 5] = ["a", "b", "", "$s", "c"];
    const FILTER_LEVELS: [&str; 6] = ["a", "b", "", "$s", "+", "#"];

    fn joined(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 1..=max).prop_map(|v| v.join("/"))
    }

    fn topic() -> impl Strategy<Value = String> {
        joined(&LEVELS, 4).prop_filter("valid", |t| valid_topic_name(t))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Inserts, replacements and removals between slices: a topic untouched for the
        /// whole walk is yielded exactly once with its value; nothing is yielded twice,
        /// not even a topic set again; whatever is yielded matches the filter.
        #[test]
        fn changes_between_slices_never_lose_or_repeat(
            initial in prop::collection::vec(topic(), 0..40),
            filter in joined(&FILTER_LEVELS, 5).prop_filter("valid", |f| valid_filter(f)),
            budget in 1usize..6,
            ops in prop::collection::vec((topic(), any::<bool>()), 0..30),
        ) {
            let mut names: Vec<String> = Vec::new();
            let mut tree = TopicTree::new();
            let mut current: HashMap<String, usize> = HashMap::new();
            for t in &initial {
                names.push(t.clone());
                tree.insert(t, names.len() - 1);
                current.insert(t.clone(), names.len() - 1);
            }
            let mut touched: BTreeMap<String, ()> = BTreeMap::new();
            let got = walk_all(&mut tree, &filter, budget, |tree, slice| {
                let Some((t, insert)) = ops.get(slice) else { return };
                touched.insert(t.clone(), ());
                if *insert {
                    names.push(t.clone());
                    tree.insert(t, names.len() - 1);
                } else {
                    tree.remove(t);
                }
            });
            let mut seen_topics = std::collections::HashSet::new();
            for &v in &got {
                let t = &names[v];
                prop_assert!(matches(&filter, t), "{t} yielded for {filter}");
                prop_assert!(seen_topics.insert(t.clone()), "{t} yielded twice");
            }
            for (t, &v) in &current {
                if matches(&filter, t) && !touched.contains_key(t) {
                    prop_assert!(got.contains(&v), "{t} lost");
                }
            }
        }
    }
}
