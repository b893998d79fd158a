//! Sessions in process: a channel pair as the socket, the memory broker and
//! paused time. No TCP, no Redis; timers fire when the test is idle, so
//! expiry and deadlines take no wall-clock time.

mod coalesce;
mod hardening;
mod harness;
mod rotation;

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::run;
use harness::{Client, Harness, compile, config, config_in, raw_config, revoked};

#[tokio::test(start_paused = true)]
async fn an_expired_token_revokes_every_subscription_then_says_so() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 10).await;
    c.subscribed("public-news").await;
    c.subscribed("user.alice.inbox").await;
    assert!(c.quiet_for(Duration::from_secs(8)).await);

    let mut revocations = vec![c.recv().await, c.recv().await];
    revocations.sort_by_key(|frame| frame["context"].to_string());
    assert_eq!(
        revocations,
        [
            revoked("public-news", "token expired"),
            revoked("user.alice.inbox", "token expired"),
        ]
    );
    assert_eq!(
        c.recv().await,
        json!({"action":"session","message":"session expired","error":"token_expired"})
    );
    assert_eq!(h.hub.registry().topic_count(), 0);
    assert_eq!(h.metrics.subscriptions.get(), 0);
    assert_eq!(h.metrics.sessions_authenticated.get(), 0);

    c.send("subscribe", "public-news").await;
    assert_eq!(c.recv().await["error"], "unauthenticated");
}

#[tokio::test(start_paused = true)]
async fn after_expiry_the_session_must_reauthorize_within_the_auth_timeout() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 10).await;
    assert!(c.quiet_for(Duration::from_secs(8)).await);
    assert_eq!(c.recv().await["message"], "session expired");

    // auth.timeout_secs = 30 from the expiry: silent until then, then cut.
    assert!(c.quiet_for(Duration::from_secs(29)).await);
    c.closed_with("auth_timeout", 1008).await;
    let (_, slot) = c.task.await.expect("session task").expect("socket back");
    drop(slot);
    assert_eq!(h.connections.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_token_after_expiry_lifts_the_auth_deadline() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 10).await;
    assert_eq!(c.recv().await["message"], "session expired");
    c.login("alice", 3600).await;
    assert!(c.quiet_for(Duration::from_secs(120)).await);
    c.subscribed("public-news").await;
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_the_burst_are_limit_exceeded_until_tokens_return() {
    let h = Harness::new(config(
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 2\n",
    ));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-a").await;
    c.send("subscribe", "public-b").await;
    assert_eq!(
        c.recv().await,
        json!({"action":"subscribe","message":"limit exceeded","context":"public-b",
               "error":"limit_exceeded","detail":"more than 1 requests a second (burst 2)"})
    );
    assert_eq!(h.hub.registry().topic_count(), 1);

    tokio::time::advance(Duration::from_secs(1)).await;
    c.subscribed("public-b").await;
}

#[tokio::test(start_paused = true)]
async fn an_acl_change_on_reload_revokes_what_it_no_longer_allows() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;
    c.subscribed("user.alice.inbox").await;

    h.reload(config(
        "[[acl.rules]]\ntopics = [\"user.${sub}.*\"]\neffect = \"allow\"\n",
    ));
    assert_eq!(
        c.recv().await,
        revoked("public-news", "no longer allowed by the acl")
    );
    h.publish("public-news", "\"gone\"").await;
    h.publish("user.alice.inbox", "\"kept\"").await;
    let mut kept = c.recv().await;
    // The memory broker records it: the first offset of a new epoch.
    assert!(kept["epoch"].is_string(), "{kept}");
    kept.as_object_mut().map(|frame| frame.remove("epoch"));
    assert_eq!(
        kept,
        json!({"action":"message","topic":"user.alice.inbox","snapshot":"kept","offset":1})
    );
    assert_eq!(h.hub.registry().topic_count(), 1);
    c.send("subscribe", "public-news").await;
    assert_eq!(c.recv().await["error"], "forbidden");
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_gets_its_final_frame_and_1013_and_nothing_queued() {
    let h = Harness::new(config_in("bypass", "[limits]\nsend_queue = 4\n"));
    let mut c = h.connect_with_window(1).await;
    c.subscribed("public-flood").await;

    // The client reads nothing while twenty messages arrive at once: the
    // fifth overflows the queue of four.
    for _ in 0..20 {
        h.publish("public-flood", "\"x\"").await;
    }
    c.closed_with("slow_consumer", 1013).await;
    assert!(c.task.await.expect("session task").is_some());
    assert_eq!(h.hub.registry().topic_count(), 0);
    assert_eq!(
        h.metrics
            .frames_dropped
            .with_label_values(&["slow_consumer"])
            .get(),
        20
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_never_drains_is_let_go_after_the_close_timeout() {
    let h = Harness::new(config_in("bypass", "[limits]\nsend_queue = 4\n"));
    let mut c = h.connect_with_window(1).await;
    c.subscribed("public-flood").await;
    for _ in 0..20 {
        h.publish("public-flood", "\"x\"").await;
    }
    // From here the client reads nothing: the final frame fills its window
    // and the close frame never fits. The session still ends, and its slot
    // is released.
    let (socket, slot) = (&mut c.task)
        .await
        .expect("session task")
        .expect("socket back");
    drop((socket, slot));
    assert_eq!(h.connections.count(), 0);
    assert_eq!(c.recv().await["error"], "slow_consumer");
    assert_eq!(c.from_server.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_the_limits_reaches_live_sessions() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;

    // The same reload drops `public-*`: its revocation shows it applied.
    h.reload(config(
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 1\n\
         [[acl.rules]]\ntopics = [\"user.${sub}.*\"]\neffect = \"allow\"\n",
    ));
    assert_eq!(c.recv().await["detail"], "no longer allowed by the acl");
    c.subscribed("user.alice.a").await;
    c.send("subscribe", "user.alice.b").await;
    assert_eq!(c.recv().await["error"], "limit_exceeded");
}

/// A session whose idle timeout is 30 s: pings every 10 s.
fn heartbeat_harness() -> Harness {
    let mut raw = raw_config("bypass", "");
    raw.server.idle_timeout_secs = 30;
    Harness::new(compile(raw))
}

/// The next frame is a ping, within an hour of (paused) time.
async fn ping(c: &mut Client) {
    match timeout(Duration::from_secs(3600), c.from_server.recv()).await {
        Ok(Some(Message::Ping(_))) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_pinged_every_third_of_the_idle_timeout_then_dropped() {
    let h = heartbeat_harness();
    let mut c = h.connect().await;
    let start = Instant::now();
    assert!(
        timeout(Duration::from_secs(9), c.from_server.recv())
            .await
            .is_err()
    );
    ping(&mut c).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    ping(&mut c).await;
    assert_eq!(start.elapsed(), Duration::from_secs(20));

    let (socket, slot) = (&mut c.task)
        .await
        .expect("session task")
        .expect("socket back");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    drop((socket, slot));
    assert_eq!(h.metrics.connections.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_pings_stays() {
    let h = heartbeat_harness();
    let mut c = h.connect().await;
    for _ in 0..6 {
        ping(&mut c).await;
        let pong = Ok(Message::Pong(Default::default()));
        c.to_server.send(pong).await.expect("session open");
    }
    c.subscribed("public-news").await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_with_1001() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    h.shutdown.send_replace(true);
    c.closed_with("shutdown", 1001).await;
}

/// The size of the future a function returns, without calling it.
fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// The session's future is the bulk of the connection's one task, paid
/// per connection (tokio rounds a task up to a multiple of 128 bytes).
/// Measured with the socket the gateway uses; debug and release builds
/// agree.
#[test]
fn the_per_connection_future_keeps_its_size() {
    use tokio_tungstenite::WebSocketStream;
    type Upgraded = WebSocketStream<tokio::net::TcpStream>;

    let session = future_size(run::<Upgraded>);
    assert!(session <= 1104, "session future: {session} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_subscribe_with_since_replays_what_the_memory_history_kept() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-log").await;
    for payload in ["1", "2", "3"] {
        h.publish("public-log", payload).await;
    }
    let mut epoch = json!(null);
    for offset in 1..=3 {
        let frame = c.recv().await;
        assert_eq!(frame["offset"], offset, "{frame}");
        epoch = frame["epoch"].clone();
    }

    let mut back = h.connect().await;
    back.login("alice", 3600).await;
    let request = json!({"action":"subscribe","session":back.session,"context":"public-log",
                         "since":{"epoch":epoch,"offset":1},"id":7});
    back.to_server
        .send(Ok(Message::text(request.to_string())))
        .await
        .expect("session open");
    assert_eq!(
        back.recv().await,
        json!({"action":"subscribe","message":"context subscribed","context":"public-log",
               "epoch":epoch,"offset":3,"recovered":true,"id":7})
    );
    for offset in 2..=3 {
        let frame = back.recv().await;
        assert_eq!(
            frame,
            json!({"action":"message","topic":"public-log","snapshot":offset,
                   "offset":offset,"epoch":epoch})
        );
    }
    h.publish("public-log", "4").await;
    assert_eq!(back.recv().await["offset"], 4);
    assert_eq!(c.recv().await["offset"], 4);
}
