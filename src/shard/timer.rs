//! TEMPORARY stand-in with the agreed API; replaced by the bus branch on merge.
use std::collections::BTreeMap;
/// Timer handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId(u64);
/// Wheel.
#[derive(Debug, Default)]
pub struct TimerWheel {
    map: BTreeMap<(u64, u64), u64>,
    ids: std::collections::HashMap<u64, u64>,
    next: u64,
}
impl TimerWheel {
    /// New.
    pub fn new(_now_ms: u64) -> Self {
        Self::default()
    }
    /// Insert.
    pub fn insert(&mut self, deadline_ms: u64, key: u64) -> TimerId {
        self.next += 1;
        self.map.insert((deadline_ms, self.next), key);
        self.ids.insert(self.next, deadline_ms);
        TimerId(self.next)
    }
    /// Cancel.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.ids.remove(&id.0) {
            Some(d) => self.map.remove(&(d, id.0)).is_some(),
            None => false,
        }
    }
    /// Advance.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<u64>) {
        while let Some((&(d, id), &key)) = self.map.iter().next() {
            if d > now_ms {
                break;
            }
            self.map.remove(&(d, id));
            self.ids.remove(&id);
            out.push(key);
        }
    }
    /// Next deadline.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.map.keys().next().map(|k| k.0)
    }
}
