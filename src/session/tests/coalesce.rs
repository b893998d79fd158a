//! Write coalescing (`server.write_delay_ms`): within the delay of a
//! connection's last write, frames wait and go out together when it ends;
//! after a quiet spell a frame goes out at once.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::harness::{Client, Harness, compile, config, raw_config, revoked};

const DELAY: Duration = Duration::from_millis(100);

/// The harness config with `server.write_delay_ms` set to `delay`.
fn with_delay(delay: Duration) -> crate::config::Config {
    let mut raw = raw_config("jwt", "");
    raw.server.write_delay_ms = u64::try_from(delay.as_millis()).expect("small");
    compile(raw)
}

/// Publishes `1` to `topic` and reads it, then `2`, and `3` 50 ms (paused)
/// later. Returns when `2` and `3` arrived, counted from the moment `1`
/// did, and how many writes the three took.
async fn train(h: &Harness, c: &mut Client, topic: &str) -> (Vec<Duration>, usize) {
    let before = c.flushes();
    h.publish(topic, "1").await;
    assert_eq!(c.recv().await["snapshot"], 1);
    let first = Instant::now();
    h.publish(topic, "2").await;
    sleep(Duration::from_millis(50)).await;
    h.publish(topic, "3").await;
    let mut arrived = Vec::new();
    for n in 2..=3 {
        assert_eq!(c.recv().await["snapshot"], n);
        arrived.push(first.elapsed());
    }
    (arrived, c.flushes() - before)
}

#[tokio::test(start_paused = true)]
async fn without_a_write_delay_every_frame_is_written_when_it_arrives() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;
    let ms = Duration::from_millis;
    assert_eq!(
        train(&h, &mut c, "public-news").await,
        (vec![ms(50), ms(50)], 3)
    );
}

#[tokio::test(start_paused = true)]
async fn frames_within_the_write_delay_wait_for_its_end_and_share_one_write() {
    let h = Harness::new(with_delay(DELAY));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;
    let (arrived, writes) = train(&h, &mut c, "public-news").await;
    assert_eq!(writes, 2, "`1` alone, then `2` and `3` together");
    for at in arrived {
        // The timer wheel rounds the end up to its next millisecond.
        assert!(
            at >= DELAY && at < DELAY + Duration::from_millis(2),
            "{at:?}"
        );
    }

    // After a quiet spell as long as the delay, a frame is not held back.
    sleep(DELAY).await;
    let published = Instant::now();
    h.publish("public-news", "4").await;
    assert_eq!(c.recv().await["snapshot"], 4);
    assert_eq!(published.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_the_write_delay_reaches_live_sessions() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;

    // The same reload drops `public-*`: its revocation shows it applied.
    let mut raw = raw_config(
        "jwt",
        "[[acl.rules]]\ntopics = [\"user.${sub}.*\"]\neffect = \"allow\"\n",
    );
    raw.server.write_delay_ms = 100;
    h.reload(compile(raw));
    assert_eq!(
        c.recv().await,
        revoked("public-news", "no longer allowed by the acl")
    );
    c.subscribed("user.alice.feed").await;
    let (_, writes) = train(&h, &mut c, "user.alice.feed").await;
    assert_eq!(writes, 2);
}
