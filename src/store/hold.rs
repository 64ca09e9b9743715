//! Acknowledgements held back until the records they vouch for are durable.
//!
//! Owns: a FIFO of `(Lsn, T)` in the order the engine appended them. Invariant: LSNs are
//! non-decreasing from front to back (the engine holds an ack right after appending its
//! records), so releasing is popping from the front while `lsn <= durable`. Must not
//! touch: the log itself, sockets (`T` is whatever the engine needs to send the ack).

use std::collections::VecDeque;

use super::Lsn;

/// Acks waiting for durability, released in order.
#[derive(Debug)]
pub struct AckHold<T> {
    queue: VecDeque<(Lsn, T)>,
}

impl<T> Default for AckHold<T> {
    fn default() -> Self {
        AckHold {
            queue: VecDeque::new(),
        }
    }
}

impl<T> AckHold<T> {
    /// Hold `ack` until `lsn` is durable. An LSN below the last one held is raised to it,
    /// so the queue stays ordered (an ack never overtakes an earlier one).
    pub fn hold(&mut self, lsn: Lsn, ack: T) {
        let lsn = self.queue.back().map_or(lsn, |(last, _)| lsn.max(*last));
        self.queue.push_back((lsn, ack));
    }

    /// The next ack whose records are durable, if any: call until `None`.
    pub fn release(&mut self, durable: Lsn) -> Option<T> {
        if self.queue.front().is_some_and(|(lsn, _)| *lsn <= durable) {
            self.queue.pop_front().map(|(_, ack)| ack)
        } else {
            None
        }
    }

    /// Acks still held.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_order_only_what_is_durable() {
        let mut h = AckHold::default();
        h.hold(3, "a");
        h.hold(5, "b");
        h.hold(4, "c"); // raised to 5: never overtakes "b"
        h.hold(9, "d");
        assert_eq!(h.release(2), None);
        assert_eq!(h.release(4), Some("a"));
        assert_eq!(h.release(4), None);
        assert_eq!(
            (h.release(5), h.release(5), h.release(5)),
            (Some("b"), Some("c"), None)
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h.release(100), Some("d"));
        assert!(h.is_empty());
    }
}
