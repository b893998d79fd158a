//! The cluster's slot map and the hash slot of a channel.

use std::collections::HashMap;

use redis::Value;

use super::Node;

/// Hash slots in a Redis Cluster.
const SLOT_COUNT: u16 = 16384;

/// Which master owns each hash slot, as one node told us.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SlotMap {
    /// Sorted, non-overlapping `(first, last, owner)` ranges.
    pub(super) ranges: Vec<(u16, u16, Node)>,
    /// Every master with at least one slot, and where to reach it.
    pub(super) masters: HashMap<Node, (String, u16)>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply. A master announced with an empty host
    /// is the node that answered (`asked_host`).
    pub(super) fn parse(reply: &Value, asked_host: &str) -> Result<Self, String> {
        let Value::Array(entries) = reply else {
            return Err("CLUSTER SLOTS: not an array".into());
        };
        let mut ranges = Vec::with_capacity(entries.len());
        let mut masters = HashMap::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err("CLUSTER SLOTS: an entry is not an array".into());
            };
            let (Some(first), Some(last), Some(Value::Array(master))) = (
                slot_of(fields.first()),
                slot_of(fields.get(1)),
                fields.get(2),
            ) else {
                return Err("CLUSTER SLOTS: an entry lacks its slot range or master".into());
            };
            let host = match master.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(Value::SimpleString(text)) => text.clone(),
                _ => return Err("CLUSTER SLOTS: a master lacks its host".into()),
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_string()
            } else {
                host
            };
            let port = match master.get(1) {
                Some(Value::Int(port)) => u16::try_from(*port).ok(),
                _ => None,
            }
            .ok_or("CLUSTER SLOTS: a master lacks its port")?;
            if first > last {
                return Err(format!("CLUSTER SLOTS: range {first}-{last} is reversed"));
            }
            let node: Node = format!("{host}:{port}").into();
            masters.insert(node.clone(), (host, port));
            ranges.push((first, last, node));
        }
        ranges.sort_by_key(|range| range.0);
        if ranges.windows(2).any(|pair| pair[0].1 >= pair[1].0) {
            return Err("CLUSTER SLOTS: slot ranges overlap".into());
        }
        Ok(Self { ranges, masters })
    }

    pub(super) fn owner(&self, slot: u16) -> Option<&Node> {
        let index = self.ranges.partition_point(|range| range.1 < slot);
        self.ranges
            .get(index)
            .filter(|range| range.0 <= slot)
            .map(|range| &range.2)
    }
}

fn slot_of(value: Option<&Value>) -> Option<u16> {
    match value {
        Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|slot| *slot < SLOT_COUNT),
        _ => None,
    }
}

/// The hash slot of a key or sharded channel: CRC16 of its hash tag (the
/// part between the first `{` and the next `}`, when not empty) or of the
/// whole name, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|b| *b == b'}')
            .filter(|close| *close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOT_COUNT
}
