//! The order rules of one topic, without a broker: what is delivered,
//! dropped as late, held for a catch-up, and when a joining client goes
//! live with which frames.

use super::*;
use crate::protocol::Frame;

fn at(offset: u64, epoch: &str) -> Position {
    Position::new(offset, epoch)
}

fn held() -> Held {
    Held {
        payload: bytes::Bytes::from_static(b"x"),
        position: None,
        arrived: Instant::now(),
    }
}

fn admit(topic: &mut Topic, position: &Position) -> Admit {
    topic.admit(Some(position), Some(digest(b"x")), held, || 7)
}

/// Frames waiting in `client`'s queue, as text.
fn queued(client: &ClientHandle) -> Vec<String> {
    std::iter::from_fn(|| client.queue().pop())
        .map(|outbound| outbound.frame.as_str().to_string())
        .collect()
}

#[test]
fn recorded_messages_go_out_once_in_offset_order() {
    let mut topic = Topic::new(Vec::new(), Vec::new());
    assert!(matches!(admit(&mut topic, &at(4, "e")), Admit::Deliver));
    assert!(matches!(admit(&mut topic, &at(5, "e")), Admit::Deliver));
    assert!(matches!(admit(&mut topic, &at(5, "e")), Admit::Late));
    assert!(matches!(admit(&mut topic, &at(3, "e")), Admit::Late));
    assert_eq!(topic.last, Some(at(5, "e")));
}

#[test]
fn a_skip_or_a_new_epoch_holds_everything_until_the_catch_up() {
    let mut topic = Topic::new(Vec::new(), Vec::new());
    admit(&mut topic, &at(1, "e"));
    match admit(&mut topic, &at(3, "e")) {
        Admit::CatchUp(since, 7) => assert_eq!(
            since,
            Seen {
                position: at(1, "e"),
                digest: Some(digest(b"x"))
            }
        ),
        _ => panic!("a skip starts a catch-up"),
    }
    assert!(matches!(admit(&mut topic, &at(4, "e")), Admit::Held));
    assert!(matches!(topic.admit(None, None, held, || 8), Admit::Held));
    assert_eq!(
        topic.held().map(|(id, held)| (*id, held.len())),
        Some((7, 3))
    );

    let mut topic = Topic::new(Vec::new(), Vec::new());
    admit(&mut topic, &at(9, "e"));
    assert!(matches!(admit(&mut topic, &at(1, "f")), Admit::CatchUp(..)));
}

#[test]
fn after_a_failed_catch_up_a_late_frame_is_read_as_a_possible_reuse() {
    let mut topic = Topic::new(Vec::new(), Vec::new());
    admit(&mut topic, &at(7, "e"));
    topic.rare_mut().unverified = true;
    assert!(matches!(admit(&mut topic, &at(8, "e")), Admit::Deliver));
    match admit(&mut topic, &at(5, "e")) {
        Admit::CatchUp(since, _) => assert_eq!(since.position, at(8, "e")),
        _ => panic!("a late frame starts a catch-up while unverified"),
    }
}

#[test]
fn frames_of_a_retired_epoch_are_stale_not_a_new_catch_up() {
    let mut topic = Topic::new(Vec::new(), Vec::new());
    admit(&mut topic, &at(1, "f"));
    topic.rare_mut().retired = Some("e".into());
    assert!(matches!(admit(&mut topic, &at(8, "e")), Admit::Stale));
    assert!(topic.held().is_none());
    assert!(matches!(admit(&mut topic, &at(2, "f")), Admit::Deliver));
    assert!(matches!(admit(&mut topic, &at(1, "g")), Admit::CatchUp(..)));
}

#[test]
fn a_joiner_gets_reply_replay_then_only_newer_buffered_frames() {
    let client = ClientHandle::new(1, 16);
    let mut topic = Topic::new(Vec::new(), Vec::new());
    admit(&mut topic, &at(1, "e"));
    topic.join(client.clone());
    // Live frames while the history is read: 2 (also in the replay) and 3.
    for offset in [2, 3] {
        admit(&mut topic, &at(offset, "e"));
        topic.buffer(
            &Frame::from(format!("live {offset}")),
            Some(&at(offset, "e")),
            Instant::now(),
        );
        topic.promote();
    }
    let completion = Completion {
        frames: vec![
            Outbound::reply(Frame::from_static("reply")),
            Outbound::reply(Frame::from_static("replay 2")),
        ],
        last: Some(at(2, "e")),
    };
    assert!(topic.complete(1, completion));
    assert_eq!(queued(&client), ["reply", "replay 2", "live 3"]);
    assert!(topic.joining().is_empty());
    assert_eq!(topic.subscribers.len(), 1);
}

#[test]
fn a_joiner_whose_read_is_ahead_waits_for_live_delivery_to_reach_it() {
    let client = ClientHandle::new(1, 16);
    let mut topic = Topic::new(Vec::new(), Vec::new());
    admit(&mut topic, &at(1, "e"));
    topic.join(client.clone());
    // The read saw offset 2, whose live frame has not reached the replica yet.
    let completion = Completion {
        frames: vec![Outbound::reply(Frame::from_static("reply"))],
        last: Some(at(2, "e")),
    };
    assert!(topic.complete(1, completion));
    assert!(
        queued(&client).is_empty(),
        "not live before offset 2 passed"
    );
    admit(&mut topic, &at(2, "e"));
    topic.buffer(
        &Frame::from_static("live 2"),
        Some(&at(2, "e")),
        Instant::now(),
    );
    topic.promote();
    assert_eq!(queued(&client), ["reply"], "offset 2 is not sent twice");
    assert_eq!(topic.subscribers.len(), 1);
}

#[test]
fn a_joiner_that_left_is_not_completed() {
    let client = ClientHandle::new(1, 16);
    let mut topic = Topic::new(Vec::new(), Vec::new());
    topic.join(client);
    topic.remove(1);
    assert!(topic.is_empty());
    let completion = Completion {
        frames: Vec::new(),
        last: None,
    };
    assert!(!topic.complete(1, completion));
}

#[test]
fn a_finished_join_leaves_no_room_behind() {
    // Every idle topic pays for what its entry keeps: a joiner's slot must
    // not outlive the join, and a lone subscriber takes one slot.
    let client = ClientHandle::new(1, 16);
    let mut topic = Topic::new(Vec::new(), Vec::new());
    topic.join(client.clone());
    let completion = Completion {
        frames: vec![Outbound::reply(Frame::from_static("reply"))],
        last: None,
    };
    assert!(topic.complete(1, completion));
    assert!(topic.rare.is_none(), "the joiners' room is freed");
    assert_eq!(topic.subscribers.capacity(), 1);

    let mut left = Topic::new(Vec::new(), Vec::new());
    left.join(ClientHandle::new(2, 16));
    left.remove(2);
    assert!(left.rare.is_none(), "the joiners' room is freed");
}

/// A map bucket of this is paid per live topic (in the idle benchmark, per
/// connection): the state of joins, catch-ups and gaps stays out of it.
#[test]
fn a_topic_entry_keeps_its_size() {
    assert!(size_of::<Topic>() <= 56, "{}", size_of::<Topic>());
}
