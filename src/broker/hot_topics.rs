//! `HotTopics`: a sampled, bounded count of the topics published to on this shard, for the
//! dashboard's "busiest topics".
//!
//! Owns: one small table of (topic, sampled count). Invariants: it holds at most
//! `HOT_TOPICS_MAX` topics; on average one publish in `HOT_TOPIC_SAMPLE_EVERY` is looked
//! at, the gap drawn at random so that periodic traffic cannot alias with the sampling (the
//! others cost one counter decrement), and a sampled publish costs at most one scan of the
//! table and, for a topic not yet held, one `Arc` clone of the topic (no copy of it). A
//! full table replaces its smallest entry (the Space-Saving scheme), so a topic published
//! steadily always makes its way in; counts are halved every `HOT_TOPICS_DECAY_MS` so the
//! list follows what is busy now. Must not touch: routing; it only watches.

use std::sync::Arc;

/// Topics held per shard.
pub const HOT_TOPICS_MAX: usize = 64;
/// One publish in this many is sampled.
pub const HOT_TOPIC_SAMPLE_EVERY: u32 = 16;
/// Counts are halved this often, ms.
pub const HOT_TOPICS_DECAY_MS: u64 = 30_000;

/// The sampled topic counts of one shard.
#[derive(Debug, Default)]
pub struct HotTopics {
    entries: Vec<(Arc<str>, u64)>,
    /// Publishes until the next sample.
    skip: u32,
    /// xorshift state for the gaps between samples (never 0).
    rng: u32,
    decayed_at_ms: u64,
}

/// One step of xorshift32 (0 is mapped to a fixed seed, so the state never sticks at 0).
fn xorshift(mut x: u32) -> u32 {
    if x == 0 {
        x = 0x9e37_79b9;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

impl HotTopics {
    /// A publish to `topic`: sample it now and then.
    #[inline]
    pub fn observe(&mut self, topic: &Arc<str>, now_ms: u64) {
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        // A gap uniform in 0..2·EVERY-1: one sample per EVERY publishes on average.
        self.rng = xorshift(self.rng);
        self.skip = self.rng % (2 * HOT_TOPIC_SAMPLE_EVERY - 1);
        self.sample(topic, now_ms);
    }

    fn sample(&mut self, topic: &Arc<str>, now_ms: u64) {
        if now_ms >= self.decayed_at_ms + HOT_TOPICS_DECAY_MS {
            self.decayed_at_ms = now_ms;
            for e in &mut self.entries {
                e.1 /= 2;
            }
            self.entries.retain(|e| e.1 > 0);
        }
        if let Some(e) = self.entries.iter_mut().find(|e| *e.0 == **topic) {
            e.1 += 1;
            return;
        }
        if self.entries.len() < HOT_TOPICS_MAX {
            self.entries.push((topic.clone(), 1));
            return;
        }
        // Space-Saving: the newcomer inherits the smallest count, plus one.
        if let Some(min) = self.entries.iter_mut().min_by_key(|e| e.1) {
            *min = (topic.clone(), min.1 + 1);
        }
    }

    /// The `n` busiest topics, busiest first, with their estimated publish counts
    /// (sampled counts times the sampling interval).
    pub fn top(&self, n: usize) -> Vec<(Arc<str>, u64)> {
        let mut v: Vec<(Arc<str>, u64)> = self
            .entries
            .iter()
            .map(|(t, c)| (t.clone(), c * u64::from(HOT_TOPIC_SAMPLE_EVERY)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_topic_rises_to_the_top_and_the_table_stays_bounded() {
        let mut h = HotTopics::default();
        let busy: Arc<str> = "busy/topic".into();
        for i in 0..100_000u64 {
            let noise: Arc<str> = format!("noise/{i}").into();
            h.observe(&noise, 0);
            if i % 3 == 0 {
                h.observe(&busy, 0);
            }
        }
        assert!(h.entries.len() <= HOT_TOPICS_MAX);
        let top = h.top(3);
        assert_eq!(&*top[0].0, "busy/topic", "{top:?}");
        // About a quarter of the publishes went to it (1 in 4 of all observations).
        assert!(top[0].1 > 10_000, "{top:?}");
    }

    #[test]
    fn counts_decay_so_the_list_follows_what_is_busy_now() {
        let mut h = HotTopics::default();
        let old: Arc<str> = "old".into();
        let new: Arc<str> = "new".into();
        for _ in 0..1600 {
            h.observe(&old, 0);
        }
        for step in 1..=4u64 {
            for _ in 0..320 {
                h.observe(&new, step * HOT_TOPICS_DECAY_MS);
            }
        }
        assert_eq!(&*h.top(1)[0].0, "new", "{:?}", h.top(2));
    }
}
