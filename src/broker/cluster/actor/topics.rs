//! Where each topic this replica holds is subscribed, mirrored for the
//! broker handle.

use std::collections::HashMap;

use super::Node;
use crate::broker::engine::Waiting;
use crate::sync::lock;

/// Every topic this replica holds and the node it is subscribed on
/// (`None` until it is subscribed on its slot's owner again). The `None`
/// ones are mirrored in `waiting`, shared with the broker handle, so the hub
/// can tell a held topic that is live from one that waits for its shard.
pub(super) struct Topics {
    pub(super) placed: HashMap<String, Option<Node>>,
    pub(super) waiting: Waiting,
}

impl Topics {
    pub(super) fn get(&self, topic: &str) -> Option<&Option<Node>> {
        self.placed.get(topic)
    }

    pub(super) fn len(&self) -> usize {
        self.placed.len()
    }

    /// Holds `topic`, subscribed on `node`.
    pub(super) fn place(&mut self, topic: &str, node: Node) {
        self.placed.insert(topic.to_string(), Some(node));
        lock(&self.waiting).remove(topic);
    }

    /// `topic`, if held, waits to be subscribed again.
    pub(super) fn unplace(&mut self, topic: &str) {
        if let Some(placed) = self.placed.get_mut(topic) {
            *placed = None;
            lock(&self.waiting).insert(topic.to_string());
        }
    }

    /// Every topic subscribed on `node` waits to be subscribed again.
    pub(super) fn unplace_on(&mut self, node: &Node) {
        let mut waiting = lock(&self.waiting);
        for (topic, placed) in &mut self.placed {
            if placed.as_ref() == Some(node) {
                *placed = None;
                waiting.insert(topic.clone());
            }
        }
    }

    pub(super) fn unplace_all(&mut self) {
        let mut waiting = lock(&self.waiting);
        for (topic, placed) in &mut self.placed {
            *placed = None;
            waiting.insert(topic.clone());
        }
    }

    /// Lets go of `topic`; where it was subscribed, if anywhere.
    pub(super) fn remove(&mut self, topic: &str) -> Option<Option<Node>> {
        lock(&self.waiting).remove(topic);
        self.placed.remove(topic)
    }
}
