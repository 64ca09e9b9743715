#![forbid(unsafe_code)]
//! TEMPORARY stand-in with the agreed API; replaced by the topic branch on merge.
pub mod retained;
pub mod trie;
/// Levels.
pub const TOPIC_LEVELS_MAX: usize = 128;
/// Valid name.
pub fn valid_topic_name(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0'])
}
/// Valid filter.
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return false;
        }
        if l.contains('+') && *l != "+" {
            return false;
        }
    }
    true
}
/// Matches.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match t.next() {
            Some(l) if f == "+" || f == l => {}
            _ => return false,
        }
    }
    t.next().is_none()
}
/// Shared.
pub struct SharedFilter<'a> {
    /// Group.
    pub group: &'a str,
    /// Filter.
    pub filter: &'a str,
}
/// Kind.
pub enum FilterKind<'a> {
    /// Normal.
    Normal(&'a str),
    /// Shared.
    Shared(SharedFilter<'a>),
}
/// Error.
#[derive(Debug)]
pub enum FilterError {
    /// Invalid.
    Invalid,
    /// Invalid share.
    InvalidShare,
}
/// Parse.
pub fn parse_filter(filter: &str) -> Result<FilterKind<'_>, FilterError> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        let (group, f) = rest.split_once('/').ok_or(FilterError::InvalidShare)?;
        if group.is_empty() || group.contains(['+', '#']) || !valid_filter(f) {
            return Err(FilterError::InvalidShare);
        }
        return Ok(FilterKind::Shared(SharedFilter { group, filter: f }));
    }
    if valid_filter(filter) {
        Ok(FilterKind::Normal(filter))
    } else {
        Err(FilterError::Invalid)
    }
}
