#![forbid(unsafe_code)]
//! Mosquitto's `acl_file`: loading, and the decisions `can_publish`, `can_read`,
//! `can_subscribe`, with a per-link decision cache.
//!
//! Owns: the rules of one loaded file, indexed for matching (one [`FilterTrie`] per user and
//! one for anonymous clients; patterns in a short list, deny first, bucketed by a literal
//! first level so a decision substitutes only the patterns that could match), and a
//! generation number unique to this load. Format (Mosquitto's `aclfile__parse`):
//!
//! ```text
//! # lines before the first `user` apply to anonymous clients (no username)
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! pattern write devices/%u/%c/#
//! ```
//!
//! Invariants (each stricter than or equal to Mosquitto, never looser):
//! * A file that loads is complete: a bad line fails the whole load with file and line.
//! * No matching rule denies; an empty file denies everything.
//! * A `deny` rule that matches wins over every grant (Mosquitto lets a user's own grant
//!   win over a *pattern* deny; we do not).
//! * A topic beginning with `$` matches only rules beginning with `$` ([`topic::matches`]).
//! * Rules match whole topics: `a/b` does not match `a/b/c`.
//! * A pattern gives nothing to a client whose substituted username or client id is empty,
//!   contains `+`, `#`, `/` or NUL, or turns the rule into a `$` rule: no identity gains
//!   wildcard or extra-level rights (CVE-2017-7650 class).
//!
//! Must not touch: sessions, packets, sockets, threads. Shared-subscription prefixes
//! (`$share/g/`) are stripped by the caller before [`Acl::can_subscribe`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::file_error::{at, read_text, AuthFileError};
use crate::topic::{self, FilterTrie};

mod cache;
mod filters;
#[cfg(test)]
mod tests;

pub use cache::{AclCache, ACL_CACHE_PTR_SLOTS, ACL_CACHE_SLOTS};
pub use filters::{covers, overlaps};

/// Largest ACL file accepted.
pub const ACL_FILE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest line: a maximal topic filter plus the keyword and access word.
pub const ACL_LINE_BYTES_MAX: usize = topic::TOPIC_BYTES_MAX + 32;
/// Most `pattern` lines: they are substituted and scanned linearly on an uncached decision.
pub const ACL_PATTERNS_MAX: usize = 1024;
/// Most rules in one file (all kinds).
pub const ACL_RULES_MAX: usize = 1_000_000;

/// Access bit: the rule lets the client receive matching messages.
pub(crate) const READ: u8 = 1;
/// Access bit: the rule lets the client publish to matching topics.
pub(crate) const WRITE: u8 = 2;
/// Access bit: the rule denies both, whatever else matches.
pub(crate) const DENY: u8 = 4;

/// Who asks: what the patterns substitute and which rule block applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client<'a> {
    /// The CONNECT username; `None` for an anonymous client.
    pub username: Option<&'a str>,
    /// The client identifier (assigned or given).
    pub client_id: &'a str,
}

/// Source of generation numbers: every loaded file gets a fresh one, so a cache can tell
/// any two loads apart, on any listener.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A fresh generation number (never 0, never repeated in this process).
pub fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// One `pattern` line.
#[derive(Debug, Clone)]
struct Pattern {
    filter: String,
    bits: u8,
}

/// One loaded ACL file.
pub struct Acl {
    generation: u64,
    anonymous: FilterTrie<u8>,
    users: HashMap<String, FilterTrie<u8>>,
    /// Deny patterns first, then the others, each in file order.
    patterns: Vec<Pattern>,
    /// Indexes into `patterns` (in its order) of the patterns whose first level is a
    /// literal (no `+`, `#`, `%`), by that level: only topics with that first level can
    /// match them.
    patterns_by_first: HashMap<String, Vec<usize>>,
    /// Indexes of the other patterns (wildcard or substitution in the first level).
    patterns_general: Vec<usize>,
    /// The same rules as flat lists, for `can_subscribe` (filter-to-filter reasoning).
    anonymous_rules: Vec<(String, u8)>,
    user_rules: HashMap<String, Vec<(String, u8)>>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Acl(generation {}, {} anonymous rules, {} users, {} patterns)",
            self.generation,
            self.anonymous_rules.len(),
            self.users.len(),
            self.patterns.len()
        )
    }
}

impl Acl {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Acl, AuthFileError> {
        let text = read_text(path, ACL_FILE_BYTES_MAX)?;
        Acl::parse(&text, &path.display().to_string())
    }

    /// An ACL without rules: it denies everything (like an empty file).
    pub fn deny_all() -> Acl {
        Acl {
            generation: next_generation(),
            anonymous: FilterTrie::new(),
            users: HashMap::new(),
            patterns: Vec::new(),
            patterns_by_first: HashMap::new(),
            patterns_general: Vec::new(),
            anonymous_rules: Vec::new(),
            user_rules: HashMap::new(),
        }
    }

    /// Parse file text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Acl, AuthFileError> {
        if text.len() > ACL_FILE_BYTES_MAX {
            return Err(at(name, 0, "file larger than 16 MiB"));
        }
        let mut acl = Acl::deny_all();
        let mut current_user: Option<String> = None;
        let mut rules = 0usize;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = parse_line(raw).map_err(|p| at(name, index + 1, p))?;
            rules += 1;
            if rules > ACL_RULES_MAX {
                return Err(at(
                    name,
                    index + 1,
                    format!("more than {ACL_RULES_MAX} lines"),
                ));
            }
            match line {
                Line::Skip => {}
                Line::User(u) => current_user = Some(u),
                Line::Topic(bits, filter) => acl.add_topic(current_user.as_deref(), filter, bits),
                Line::Pattern(bits, filter) => {
                    if acl.patterns.len() >= ACL_PATTERNS_MAX {
                        return Err(at(
                            name,
                            index + 1,
                            format!("more than {ACL_PATTERNS_MAX} patterns"),
                        ));
                    }
                    acl.patterns.push(Pattern { filter, bits });
                }
            }
        }
        // Stable: deny patterns first, each group in file order.
        acl.patterns.sort_by_key(|p| p.bits & DENY == 0);
        acl.index_patterns();
        Ok(acl)
    }

    /// Bucket the patterns by literal first level (the decision is a union of bits with
    /// any deny winning, so visiting a subset of candidates in any order is exact).
    fn index_patterns(&mut self) {
        for (i, p) in self.patterns.iter().enumerate() {
            let first = p.filter.split('/').next().unwrap_or("");
            if first.contains(['+', '#', '%']) {
                self.patterns_general.push(i);
            } else {
                self.patterns_by_first
                    .entry(first.to_string())
                    .or_default()
                    .push(i);
            }
        }
    }

    fn add_topic(&mut self, user: Option<&str>, filter: String, bits: u8) {
        let (trie, list) = match user {
            None => (&mut self.anonymous, &mut self.anonymous_rules),
            Some(u) => (
                self.users.entry(u.to_string()).or_default(),
                self.user_rules.entry(u.to_string()).or_default(),
            ),
        };
        *trie.entry_or_insert_with(&filter, || 0) |= bits;
        list.push((filter, bits));
    }

    /// This load's generation number (unique in the process).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The union of the access bits of every rule matching `topic` for `client`
    /// ([`DENY`] alone when a deny rule matches).
    pub(crate) fn bits_for(&self, client: Client<'_>, topic: &str) -> u8 {
        let mut bits = 0u8;
        let trie = match client.username {
            None => Some(&self.anonymous),
            Some(u) => self.users.get(u),
        };
        if let Some(t) = trie {
            t.for_each_match(topic, |b| bits |= *b);
        }
        if bits & DENY != 0 {
            return DENY;
        }
        if self.patterns.is_empty() {
            return bits;
        }
        let first = topic.split('/').next().unwrap_or("");
        let literal = self.patterns_by_first.get(first).map_or(&[][..], |v| v);
        let mut buf = String::new();
        for &i in literal.iter().chain(&self.patterns_general) {
            let Some(p) = self.patterns.get(i) else {
                continue;
            };
            if substitute_into(&mut buf, &p.filter, client) && topic::matches(&buf, topic) {
                if p.bits & DENY != 0 {
                    return DENY;
                }
                bits |= p.bits;
            }
        }
        bits
    }

    /// May `client` publish to the topic name `topic`? (Also: may its Will be published.)
    pub fn can_publish(&self, client: Client<'_>, topic: &str) -> bool {
        allows(self.bits_for(client, topic), WRITE)
    }

    /// May `client` receive a message on `topic`? (Deliveries, retained messages, `$SYS`.)
    pub fn can_read(&self, client: Client<'_>, topic: &str) -> bool {
        allows(self.bits_for(client, topic), READ)
    }

    /// May `client` subscribe to `filter` (a valid filter, `$share/g/` stripped)?
    ///
    /// Stricter than Mosquitto, which grants every SUBSCRIBE: refused when no readable
    /// rule overlaps the filter, or a deny rule covers all of it. A granted filter may
    /// still carry messages the client cannot read: deliveries are checked one by one.
    pub fn can_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        if !topic::valid_filter(filter) {
            return false;
        }
        let mut readable = false;
        let mut check = |rule: &str, bits: u8| -> bool {
            if bits & DENY != 0 && covers(rule, filter) {
                return false;
            }
            readable |= bits & READ != 0 && overlaps(rule, filter);
            true
        };
        let own = match client.username {
            None => Some(&self.anonymous_rules),
            Some(u) => self.user_rules.get(u),
        };
        for (rule, bits) in own.into_iter().flatten() {
            if !check(rule, *bits) {
                return false;
            }
        }
        let mut buf = String::new();
        for p in &self.patterns {
            if substitute_into(&mut buf, &p.filter, client) && !check(&buf, p.bits) {
                return false;
            }
        }
        readable
    }
}

/// Grant test on a union of rule bits.
pub(crate) fn allows(bits: u8, need: u8) -> bool {
    bits & DENY == 0 && bits & need != 0
}

/// Is `value` safe to put into a pattern: one non-empty level, no wildcard, no NUL?
fn safe_identity(value: &str) -> bool {
    !value.is_empty() && !value.contains(['+', '#', '/', '\0'])
}

/// Write `pattern` with `%u` and `%c` replaced into `out`. `false` when the pattern does
/// not apply to `client`: `%u` without a username, an unsafe identity, or a result that
/// would become a `$` rule though the pattern is not one.
pub(crate) fn substitute_into(out: &mut String, pattern: &str, client: Client<'_>) -> bool {
    out.clear();
    let mut rest = pattern;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let value = if tail.starts_with('u') {
            match client.username {
                Some(u) => u,
                None => return false,
            }
        } else if tail.starts_with('c') {
            client.client_id
        } else {
            out.push('%');
            rest = tail;
            continue;
        };
        if !safe_identity(value) {
            return false;
        }
        out.push_str(value);
        rest = &tail[1..];
    }
    out.push_str(rest);
    !out.starts_with('$') || pattern.starts_with('$')
}

/// One parsed line.
enum Line {
    Skip,
    User(String),
    Topic(u8, String),
    Pattern(u8, String),
}

/// Parse one line; the error is the problem, without file and line.
fn parse_line(raw: &str) -> Result<Line, String> {
    if raw.len() > ACL_LINE_BYTES_MAX {
        return Err(format!("line longer than {ACL_LINE_BYTES_MAX} bytes"));
    }
    let line = raw.trim_matches([' ', '\t', '\r']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Skip);
    }
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim_start_matches(' ');
    match keyword {
        "user" if rest.is_empty() => Err("'user' without a name".into()),
        "user" => Ok(Line::User(rest.to_string())),
        "topic" => access_and_filter(rest).map(|(b, f)| Line::Topic(b, f)),
        "pattern" => access_and_filter(rest).map(|(b, f)| Line::Pattern(b, f)),
        other => Err(format!(
            "unknown keyword '{other}' (expected user, topic or pattern)"
        )),
    }
}

/// `[read|write|readwrite|deny] FILTER`; without an access word the rule is readwrite and
/// the whole rest is the filter.
fn access_and_filter(rest: &str) -> Result<(u8, String), String> {
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let (bits, filter) = match first {
        "read" => (READ, after),
        "write" => (WRITE, after),
        "readwrite" => (READ | WRITE, after),
        "deny" => (DENY, after),
        _ => (READ | WRITE, rest),
    };
    let filter = filter.trim_matches(' ');
    if filter.is_empty() {
        return Err("missing topic filter".into());
    }
    if !topic::valid_filter(filter) {
        return Err(format!("invalid topic filter '{filter}'"));
    }
    Ok((bits, filter.to_string()))
}

/// Fuzzing entry point (`fuzz/fuzz_targets/acl_file.rs`): any bytes load to an ACL or to
/// an error naming a line, and decisions on a loaded ACL never panic.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Acl::parse(text, "fuzz.acl") {
        Ok(acl) => {
            let c = Client {
                username: Some("u+#/"),
                client_id: "c",
            };
            for t in ["a", "a/b", "$SYS/x", "u+#/"] {
                let _ = (acl.can_publish(c, t), acl.can_read(c, t));
            }
            let _ = acl.can_subscribe(c, "#");
        }
        Err(e) => assert!(e.line >= 1, "a parse error names its line: {e}"),
    }
}
