//! The policy engine over a real WebSocket: every `invalid_token` cause,
//! asymmetric keys, claim-templated ACL rules, token expiry and refresh
//! with partial revocation (docs/PROTOCOL.md, Token lifetime and
//! Revocation; `[auth]` and `[acl]` in docs/CONFIG.md).

use topicgate_test_support as common;

use base64_url::encode as b64;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use topicgate::unix_now as now;

/// Tiny base64url without padding, for hand-made tokens.
mod base64_url {
    pub fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn hs(secret: &str, claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        claims,
    )
}

/// Authorizes with `token` and returns the `detail` of the expected
/// `invalid_token` reply.
async fn refused(c: &mut Client, token: &str) -> String {
    let reply = c.authorize(token).await;
    assert_eq!(reply["action"], "session", "{reply}");
    assert_eq!(reply["message"], "session unauthorized", "{reply}");
    assert_eq!(reply["error"], "invalid_token", "{reply}");
    let detail = reply["detail"].as_str().unwrap().to_string();
    assert!(
        !detail.contains(token),
        "the detail must not echo the token"
    );
    assert!(
        !detail.contains(SECRET),
        "the detail must not reveal the secret"
    );
    detail
}

#[tokio::test]
async fn each_invalid_token_cause_has_a_precise_detail() {
    let gateway = start_gateway(base_config(
        None,
        "[auth.jwt]\nissuer = \"https://auth.test\"\naudience = \"topicgate\"\nleeway_secs = 0\n",
    ))
    .await;
    let mut c = Client::connect(gateway.addr).await;
    let t = now();
    let good = json!({"sub":"alice","iss":"https://auth.test","aud":"topicgate","exp":t+600});
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let none_token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let cases: Vec<(String, &str)> = vec![
        (hs("another-secret", good.clone()), "signature is invalid"),
        ("abc.def".into(), "malformed"),
        ("not a token".into(), "malformed"),
        (none_token, "algorithm none is not allowed"),
        (
            sign(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
                good.clone(),
            ),
            "algorithm HS384 is not allowed",
        ),
        (hs(SECRET, with(json!({"exp": t - 10}))), "expired"),
        (hs(SECRET, with(json!({"nbf": t + 600}))), "not valid yet"),
        (
            hs(SECRET, with(json!({"iss": "https://evil.test"}))),
            "issuer is not accepted",
        ),
        (hs(SECRET, with(json!({"iss": null}))), "no issuer"),
        (
            hs(SECRET, with(json!({"aud": "someone-else"}))),
            "audience is not accepted",
        ),
        (hs(SECRET, with(json!({"aud": null}))), "no audience"),
    ];
    // A connection may be refused five times (the sixth closes it): one
    // connection per five cases, and the good token still accepted after
    // its refusals.
    for chunk in cases.chunks(5) {
        for (token, expected) in chunk {
            let detail = refused(&mut c, token).await;
            assert!(detail.contains(expected), "{expected:?} not in {detail:?}");
        }
        let reply = c.authorize(&hs(SECRET, good.clone())).await;
        assert_eq!(reply["message"], "session authenticated");
        c = Client::connect(gateway.addr).await;
    }
}

#[tokio::test]
async fn the_sixth_refused_authorization_closes_the_connection_with_1008() {
    let gateway = start_gateway(base_config(None, "")).await;
    let mut c = Client::connect(gateway.addr).await;
    let forged = hs("another-secret", json!({"sub": "mallory"}));
    for _ in 0..5 {
        refused(&mut c, &forged).await;
    }
    let session = c.session.clone();
    c.send_json(&json!({"action":"authorization","session":session,"context":forged}))
        .await;
    let (frames, close) = c.recv_until_close().await;
    assert_eq!(
        frames,
        [json!({"action":"connect","message":"client disconnect","error":"invalid_token"})]
    );
    assert_eq!(u16::from(close.expect("a close frame").code), 1008);
    gateway.connections_at_most(0).await;
}

/// A config for one asymmetric algorithm with its public key fixture.
fn asymmetric_config(alg: &str, public_key: &str) -> String {
    format!(
        "[auth.jwt]\nalgorithms = [\"{alg}\"]\npublic_key_file = \"{public_key}\"\n\
         [[acl.rules]]\ntopics = [\"user.${{sub}}.*\"]\neffect = \"allow\"\n"
    )
}

#[tokio::test]
async fn rs256_and_es256_tokens_authorize_and_hs_forgeries_do_not() {
    let rs_private = EncodingKey::from_rsa_pem(&fixture("rs256.key.pem")).unwrap();
    let es_private = EncodingKey::from_ec_pem(&fixture("es256.key.pem")).unwrap();
    for (alg, public, key) in [
        (Algorithm::RS256, "rs256.pub.pem", rs_private),
        (Algorithm::ES256, "es256.pub.pem", es_private),
    ] {
        let name = format!("{alg:?}");
        let gateway = start_gateway(base_config(None, &asymmetric_config(&name, public))).await;
        let mut c = Client::connect(gateway.addr).await;
        let claims = json!({"sub":"alice","exp":now()+600});

        // Key confusion: HS256 keyed with the public key's own PEM bytes.
        let pem = String::from_utf8(fixture(public)).unwrap();
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(pem.as_bytes()).unwrap(),
            claims.clone(),
        );
        let detail = refused(&mut c, &forged).await;
        assert!(detail.contains("only asymmetric keys"), "{name}: {detail}");

        let token = sign(alg, &key, claims);
        let reply = c.authorize(&token).await;
        assert_eq!(reply["message"], "session authenticated", "{name}: {reply}");
        c.subscribed("user.alice.inbox").await;
        assert_eq!(c.subscribe("user.bob.inbox").await["error"], "forbidden");
    }
}

/// Per-user channels, an admin-only prefix by role, a public prefix.
const POLICY: &str = "[acl]\ndefault = \"deny\"\n\
    [[acl.rules]]\ntopics = [\"user.${sub}.*\", \"feed.{${sub},common}\"]\neffect = \"allow\"\n\
    [[acl.rules]]\ntopics = [\"admin-*\"]\nclaims = { role = \"admin\" }\neffect = \"allow\"\n\
    [[acl.rules]]\ntopics = [\"public-*\"]\neffect = \"allow\"\n";

#[tokio::test]
async fn claim_templates_and_conditions_decide_per_token() {
    let gateway = start_gateway(base_config(None, POLICY)).await;
    let mut alice = Client::connect(gateway.addr).await;
    alice.login("alice").await;
    for topic in [
        "user.alice.inbox",
        "feed.alice",
        "feed.common",
        "public-news",
    ] {
        alice.subscribed(topic).await;
    }
    for topic in ["user.bob.inbox", "feed.bob", "admin-panel", "user.alice"] {
        assert_eq!(
            alice.subscribe(topic).await["error"],
            "forbidden",
            "{topic}"
        );
    }

    let mut admin = Client::connect(gateway.addr).await;
    let root = token(json!({"sub":"root","role":["ops","admin"]}));
    assert_eq!(
        admin.authorize(&root).await["message"],
        "session authenticated"
    );
    admin.subscribed("admin-panel").await;

    // A hostile claim value cannot widen a rule.
    let mut mallory = Client::connect(gateway.addr).await;
    let star = token(json!({"sub":"*"}));
    assert_eq!(
        mallory.authorize(&star).await["message"],
        "session authenticated"
    );
    assert_eq!(
        mallory.subscribe("user.alice.inbox").await["error"],
        "forbidden"
    );
    mallory.subscribed("user.*.inbox").await;
    let comma = token(json!({"sub":"a,common}"}));
    // The refresh revokes what the new subject no longer allows.
    assert_eq!(mallory.authorize(&comma).await["context"], "user.*.inbox");
    assert_eq!(mallory.recv().await["message"], "session authenticated");
    // The value stands for itself: not "a" as an extra alternative.
    assert_eq!(mallory.subscribe("feed.a").await["error"], "forbidden");
    mallory.subscribed("feed.a,common}").await;
}

#[tokio::test]
async fn refresh_keeps_allowed_subscriptions_and_revokes_the_others() {
    let gateway = start_gateway(base_config(None, POLICY)).await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("user.alice.inbox").await;
    c.subscribed("public-news").await;

    // Same session, a token for another subject.
    let reply = c.authorize(&token(json!({"sub":"bob"}))).await;
    // The revocation comes first, then the authorization reply.
    assert_eq!(
        reply,
        json!({"action":"unsubscribe","message":"context revoked","context":"user.alice.inbox",
               "error":"forbidden","detail":"no longer allowed by the new token"})
    );
    assert_eq!(c.recv().await["message"], "session authenticated");
    let broker = gateway.publisher();
    broker
        .publish("user.alice.inbox", "\"gone\"".into())
        .await
        .unwrap();
    broker
        .publish("public-news", "\"kept\"".into())
        .await
        .unwrap();
    assert_eq!(c.recv().await["snapshot"], "kept");
    c.subscribed("user.bob.inbox").await;
    assert_eq!(gateway.topic_count(), 2);
}

#[tokio::test]
async fn expired_token_drops_subscriptions_and_the_session_can_reauthorize() {
    let gateway = start_gateway(base_config(None, "[auth.jwt]\nleeway_secs = 0\n")).await;
    let mut c = Client::connect(gateway.addr).await;
    let short = token(json!({"sub":"alice","exp": now() + 2}));
    assert_eq!(
        c.authorize(&short).await["message"],
        "session authenticated"
    );
    c.subscribed("test-a").await;
    c.subscribed("chat-b").await;

    // The expiry is the event: revocations, then the expired frame.
    let mut revoked = Vec::new();
    loop {
        let frame = c.recv().await;
        if frame["action"] == "session" {
            assert_eq!(
                frame,
                json!({"action":"session","message":"session expired","error":"token_expired"})
            );
            break;
        }
        assert_eq!(frame["message"], "context revoked", "{frame}");
        revoked.push(frame["context"].as_str().unwrap().to_string());
    }
    revoked.sort();
    assert_eq!(revoked, ["chat-b", "test-a"]);
    assert_eq!(gateway.topic_count(), 0);
    assert_eq!(c.subscribe("test-a").await["error"], "unauthenticated");

    c.login("alice").await;
    c.subscribed("test-a").await;
}

#[tokio::test]
async fn bypass_mode_uses_a_signed_tokens_claims_for_the_acl() {
    let gateway = start_gateway(base_config(
        None,
        &format!("[auth]\nmode = \"bypass\"\n{POLICY}"),
    ))
    .await;
    let mut anonymous = Client::connect(gateway.addr).await;
    anonymous.subscribed("public-x").await;
    assert_eq!(
        anonymous.subscribe("user.alice.x").await["error"],
        "forbidden"
    );
    let mut alice = Client::connect(gateway.addr).await;
    alice.login("alice").await;
    alice.subscribed("user.alice.x").await;
}
