//! Reloads that change who is authorized: a rotated key, and the switch
//! from bypass to jwt.

use std::time::Duration;

use serde_json::json;

use super::harness::{Harness, compile, config, config_in, raw_config, revoked, token};

/// The jwt harness config with `secret` instead of the usual one.
fn with_secret(secret: &str) -> crate::config::Config {
    let mut raw = raw_config("jwt", "");
    raw.auth.jwt.secret = secret.into();
    compile(raw)
}

#[tokio::test(start_paused = true)]
async fn a_rotated_secret_expires_sessions_it_verified_and_starts_the_auth_deadline() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;

    h.reload(with_secret("the-new-secret"));
    assert_eq!(
        c.recv().await,
        revoked("public-news", "token key no longer configured")
    );
    assert_eq!(
        c.recv().await,
        json!({"action":"session","message":"session expired","error":"token_expired"})
    );
    assert_eq!(h.hub.registry().topic_count(), 0);
    assert_eq!(h.metrics.sessions_authenticated.get(), 0);
    // The old token no longer verifies; the auth deadline runs from the reload.
    c.send("authorization", &token("alice", 3600)).await;
    assert_eq!(c.recv().await["error"], "invalid_token");
    assert!(c.quiet_for(Duration::from_secs(29)).await);
    c.closed_with("auth_timeout", 1008).await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_keeps_the_key_leaves_sessions_alone() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;

    h.reload(config("[limits]\nmax_subscriptions = 50\n"));
    assert!(c.quiet_for(Duration::from_secs(60)).await);
    h.publish("public-news", "\"still here\"").await;
    assert_eq!(c.recv().await["snapshot"], "still here");
    assert_eq!(h.metrics.sessions_authenticated.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn switching_from_bypass_to_jwt_unauthenticates_every_unverified_session() {
    let h = Harness::new(config_in("bypass", ""));
    // Authorized with a string that is not a token.
    let mut loose = h.connect().await;
    loose.send("authorization", "anything at all").await;
    assert_eq!(loose.recv().await["message"], "session authenticated");
    loose.subscribed("public-a").await;
    // Never authorized: bypass lets it subscribe anyway.
    let mut anonymous = h.connect().await;
    anonymous.subscribed("public-b").await;
    // Authorized with a token that verifies under the jwt config too.
    let mut signed = h.connect().await;
    signed.login("carol", 3600).await;
    signed.subscribed("user.carol.inbox").await;

    h.reload(config(""));
    assert_eq!(
        loose.recv().await,
        revoked("public-a", "authorization required")
    );
    assert_eq!(loose.recv().await["message"], "session expired");
    assert_eq!(
        anonymous.recv().await,
        revoked("public-b", "authorization required")
    );
    assert_eq!(h.hub.registry().topic_count(), 1);
    anonymous.send("subscribe", "public-b").await;
    assert_eq!(anonymous.recv().await["error"], "unauthenticated");

    h.publish("user.carol.inbox", "\"kept\"").await;
    assert_eq!(signed.recv().await["snapshot"], "kept");
    assert!(loose.quiet_for(Duration::from_secs(29)).await);
    loose.closed_with("auth_timeout", 1008).await;
    anonymous.closed_with("auth_timeout", 1008).await;
    assert!(signed.quiet_for(Duration::from_secs(60)).await);
}
