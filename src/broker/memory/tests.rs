use std::sync::Mutex;

use super::*;

/// Keeps every delivery with its position.
#[derive(Default)]
struct Seen(Mutex<Vec<(String, Bytes, Option<Position>)>>);

impl Deliver for Seen {
    fn deliver(&self, delivery: Delivery<'_>) {
        lock(&self.0).push((
            delivery.topic.to_string(),
            Bytes::copy_from_slice(delivery.payload),
            delivery.position.cloned(),
        ));
    }
}

fn broker(size: usize) -> (MemoryBroker, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let broker = MemoryBroker::with_history(seen.clone(), size, Duration::from_secs(60));
    (broker, seen)
}

async fn publish(broker: &MemoryBroker, topic: &str, payload: &'static str) -> Position {
    broker
        .publish(topic, Bytes::from_static(payload.as_bytes()))
        .await
        .expect("memory publish")
        .expect("recorded")
}

#[tokio::test]
async fn publishes_get_consecutive_offsets_per_topic_and_are_delivered_with_them() {
    let (broker, seen) = broker(10);
    let first = publish(&broker, "a", "1").await;
    let second = publish(&broker, "a", "2").await;
    let other = publish(&broker, "b", "x").await;
    assert_eq!((first.offset, second.offset, other.offset), (1, 2, 1));
    assert_eq!(first.epoch, second.epoch);
    assert_ne!(
        first.epoch, other.epoch,
        "each topic's history has its own life"
    );
    let seen = lock(&seen.0).clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1],
        ("a".into(), Bytes::from_static(b"2"), Some(second))
    );
}

#[tokio::test]
async fn history_returns_the_messages_after_since_and_the_last_position() {
    let (broker, _) = broker(10);
    for payload in ["1", "2", "3"] {
        publish(&broker, "a", payload).await;
    }
    let everything = broker.history("a", None).await.expect("history");
    let last = everything.last.clone().expect("a history");
    assert_eq!(last.offset, 3);
    assert!(everything.messages.is_empty(), "no since, no messages");

    let since = Position::new(1, last.epoch.clone());
    let range = broker
        .history("a", Some(since.clone()))
        .await
        .expect("history");
    let offsets: Vec<u64> = range.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [2, 3]);
    assert_eq!(range.messages[0].payload, Bytes::from_static(b"2"));
    assert!(range.recovers(&since));

    let elsewhere = Position::new(1, "another-epoch");
    let range = broker
        .history("a", Some(elsewhere.clone()))
        .await
        .expect("history");
    assert!(range.messages.is_empty());
    assert!(!range.recovers(&elsewhere));
    assert_eq!(broker.history("never", None).await, Ok(Range::none()));
}

#[tokio::test]
async fn history_is_capped_so_an_old_since_cannot_recover() {
    let (broker, _) = broker(2);
    for payload in ["1", "2", "3", "4"] {
        publish(&broker, "a", payload).await;
    }
    let last = broker
        .history("a", None)
        .await
        .expect("history")
        .last
        .expect("last");
    let since = Position::new(1, last.epoch.clone());
    let range = broker
        .history("a", Some(since.clone()))
        .await
        .expect("history");
    let offsets: Vec<u64> = range.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [3, 4]);
    assert!(!range.recovers(&since), "offset 2 was trimmed away");
    assert!(range.recovers(&Position::new(2, last.epoch)));
}

#[tokio::test(start_paused = true)]
async fn an_expired_history_starts_a_new_epoch() {
    let (broker, _) = broker(10);
    let before = publish(&broker, "a", "1").await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(publish(&broker, "a", "2").await.offset, 2, "still alive");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(broker.history("a", None).await, Ok(Range::none()));
    let after = publish(&broker, "a", "3").await;
    assert_eq!(after.offset, 1, "offsets restart");
    assert_ne!(after.epoch, before.epoch);
}

#[tokio::test]
async fn size_zero_records_nothing_and_delivers_unpositioned() {
    let (broker, seen) = broker(0);
    let position = broker
        .publish("a", Bytes::from_static(b"1"))
        .await
        .expect("memory publish");
    assert_eq!(position, None);
    assert_eq!(lock(&seen.0)[0].2, None);
    assert_eq!(broker.history("a", None).await, Ok(Range::none()));
}
