//! TEMPORARY.
use std::collections::BTreeMap;
/// Trie.
pub struct FilterTrie<V> {
    m: BTreeMap<String, V>,
}
impl<V> Default for FilterTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}
impl<V> FilterTrie<V> {
    /// New.
    pub fn new() -> Self {
        FilterTrie { m: BTreeMap::new() }
    }
    /// Get mut.
    pub fn get_mut(&mut self, f: &str) -> Option<&mut V> {
        self.m.get_mut(f)
    }
    /// Get.
    pub fn get(&self, f: &str) -> Option<&V> {
        self.m.get(f)
    }
    /// Entry.
    pub fn entry_or_insert_with(&mut self, f: &str, g: impl FnOnce() -> V) -> &mut V {
        self.m.entry(f.to_string()).or_insert_with(g)
    }
    /// Remove.
    pub fn remove(&mut self, f: &str) -> Option<V> {
        self.m.remove(f)
    }
    /// Match.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &V)) {
        for (k, v) in &self.m {
            if super::matches(k, topic) {
                f(k, v)
            }
        }
    }
    /// Len.
    pub fn len(&self) -> usize {
        self.m.len()
    }
    /// Empty.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }
}
