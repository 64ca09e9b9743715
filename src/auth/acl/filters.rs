//! Filter-to-filter reasoning for `can_subscribe`: does some topic match both filters
//! ([`overlaps`]), does every topic matching one match the other ([`covers`])?
//!
//! Invariant: both agree with brute force over [`crate::topic::matches`] on every topic
//! (tested against that oracle), including the `$` rule: a filter starting with a wildcard
//! matches no topic starting with `$`. Inputs are valid filters; walks are bounded by
//! their level count. Must not touch: rules, clients.

use crate::topic::levels;

/// Which topics a filter's first level admits, as far as the `$` rule goes.
fn first_is_wildcard(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
}

/// Is there a topic name that matches both filters?
pub fn overlaps(a: &str, b: &str) -> bool {
    // A wildcard-first filter only matches non-`$` topics; a literal first level decides.
    if (first_is_wildcard(a) && b.starts_with('$')) || (first_is_wildcard(b) && a.starts_with('$'))
    {
        return false;
    }
    let (mut x, mut y) = (levels(a), levels(b));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does every topic name matching `inner` also match `outer`?
pub fn covers(outer: &str, inner: &str) -> bool {
    if first_is_wildcard(outer) && inner.starts_with('$') {
        return false;
    }
    // Every topic has at least one level, so `+/#` matches exactly what `#` matches.
    if inner == "#" {
        return outer == "#" || outer == "+/#";
    }
    let (mut x, mut y) = (levels(outer), levels(inner));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(q)) if q != "#" => {}
            (Some(p), Some(q)) if p == q && q != "+" && q != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;
    use proptest::prelude::*;

    /// Every topic of 1 to 4 levels over an alphabet that includes a `$` level, an empty
    /// level and a level no filter names.
    fn universe() -> Vec<String> {
        const LEVELS: [&str; 5] = ["a", "b", "$s", "", "z"];
        let mut all: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
        let mut last = all.clone();
        for _ in 1..4 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|t| LEVELS.iter().map(move |l| format!("{t}/{l}")))
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$s", "", "+"]);
        (prop::collection::vec(level, 1..=3), any::<bool>()).prop_map(|(ls, hash)| {
            let mut f = ls.join("/");
            if hash {
                f.push_str("/#");
            }
            f
        })
    }

    fn or_hash(f: String) -> String {
        if f == "/#" || f.is_empty() {
            "#".into()
        } else {
            f
        }
    }

    proptest! {
        #[test]
        fn overlaps_and_covers_agree_with_brute_force(
            a in filter_strategy().prop_map(or_hash),
            b in prop_oneof![filter_strategy(), Just("#".to_string()), Just("+".to_string())],
        ) {
            let u = universe();
            let both = u.iter().any(|t| matches(&a, t) && matches(&b, t));
            prop_assert_eq!(overlaps(&a, &b), both, "overlaps({}, {})", a, b);
            let all = u.iter().filter(|t| matches(&b, t)).all(|t| matches(&a, t));
            prop_assert_eq!(covers(&a, &b), all, "covers({}, {})", a, b);
        }
    }

    #[test]
    fn literal_table() {
        assert!(overlaps("a/+", "+/b"));
        assert!(!overlaps("a/b", "a/b/c"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("#", "$SYS/x"));
        assert!(overlaps("$SYS/#", "$SYS/+"));
        assert!(covers("a/#", "a/+/c"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("#", "+/x"));
    }
}
