//! The topics one session holds: a sorted vector of boxed names.
//!
//! Every connection has one, usually with a topic or two: a `HashSet`
//! allocates four buckets of `String` (128 bytes) for its first entry,
//! this one slot of 16 bytes. Lookups are binary searches; an insert moves
//! the entries after it, which `limits.max_subscriptions` bounds.

/// Topic names, sorted, each once.
#[derive(Default)]
pub(super) struct TopicSet(Vec<Box<str>>);

impl TopicSet {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, topic: &str) -> bool {
        self.find(topic).is_ok()
    }

    /// Adds `topic`; `false` when it was already there.
    pub fn insert(&mut self, topic: &str) -> bool {
        match self.find(topic) {
            Ok(_) => false,
            Err(at) => {
                // Room for exactly the first topic, which is often the only one.
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, topic.into());
                true
            }
        }
    }

    /// Removes `topic`; `false` when it was not there.
    pub fn remove(&mut self, topic: &str) -> bool {
        match self.find(topic) {
            Ok(at) => {
                self.0.remove(at);
                if self.0.is_empty() {
                    self.0 = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Every topic, in order; the set keeps them.
    pub fn to_vec(&self) -> Vec<Box<str>> {
        self.0.clone()
    }

    /// Empties the set, giving its room back.
    pub fn take(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.0)
    }

    fn find(&self, topic: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|held| (**held).cmp(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_topic_once_in_order() {
        let mut set = TopicSet::default();
        assert!(set.insert("b"));
        assert!(set.insert("a"));
        assert!(set.insert("c"));
        assert!(!set.insert("b"));
        assert_eq!(set.len(), 3);
        assert!(set.contains("a") && set.contains("b") && set.contains("c"));
        assert!(!set.contains("d"));
        let names =
            |topics: Vec<Box<str>>| topics.into_iter().map(String::from).collect::<Vec<_>>();
        assert_eq!(names(set.to_vec()), ["a", "b", "c"]);
        assert!(set.remove("b"));
        assert!(!set.remove("b"));
        assert_eq!(names(set.take()), ["a", "c"]);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn the_first_topic_takes_one_slot_and_an_emptied_set_gives_it_back() {
        let mut set = TopicSet::default();
        set.insert("a");
        assert_eq!(set.0.capacity(), 1);
        set.remove("a");
        assert_eq!(set.0.capacity(), 0);
    }
}
