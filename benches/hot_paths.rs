//! Micro-benchmarks of the per-request and per-message hot paths:
//! request decode, ACL compile/bind/check over 100 rules, delivery frame
//! encode, the hub's fan-out of one message to 10k subscribers, the
//! session's writer draining its queue, and token verification per
//! algorithm family (what one `authorization` costs).
//!
//! Kept short (1 s warm-up, 2 s measurement, 20 samples per benchmark) so
//! `cargo bench` finishes in a few minutes on two cores; see
//! docs/BENCHMARKS.md for how to read the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::SinkExt as _;
use serde_json::{Map, Value, json};
use topicgate::Metrics;
use topicgate::hot_paths::{
    self as protocol, Acl, ClientHandle, Deliver, Delivery, Hub, Identity, Join, MemoryBroker,
    Outbound, RawAcl, RawRule, Registry, SendQueue, Writer,
};

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn decode(c: &mut Criterion) {
    let subscribe = r#"{"action":"subscribe","session":"0b8e6f3a-5d7c-4b1e-9f2a-3c4d5e6f7a8b","context":"chat-room","id":17}"#;
    let token = "x".repeat(180);
    let authorization = format!(
        r#"{{"action":"authorization","session":"0b8e6f3a-5d7c-4b1e-9f2a-3c4d5e6f7a8b","context":"{token}"}}"#
    );
    let mut group = c.benchmark_group("decode");
    group.bench_function("subscribe", |b| {
        b.iter(|| protocol::decode(black_box(subscribe)))
    });
    group.bench_function("authorization", |b| {
        b.iter(|| protocol::decode(black_box(&authorization)))
    });
    group.bench_function("not_json", |b| {
        b.iter(|| protocol::decode(black_box("subscribe chat-room")))
    });
    group.finish();
}

/// 100 rules in the shapes docs/CONFIG.md (`[acl]`) shows: plain globs,
/// `${claim}` templates, alternations and claim conditions; only the last
/// one allows the topic the benchmark checks, so every rule is tried.
fn hundred_rules() -> RawAcl {
    let rules = (0..100)
        .map(|i| {
            let (topics, claims) = match i % 4 {
                0 => (
                    vec![format!("room-{i}-*"), format!("lobby.{i}")],
                    Map::new(),
                ),
                1 => (vec![format!("user.${{sub}}.{i}.*")], Map::new()),
                2 => (vec![format!("feed.{{${{sub}},common}}.{i}")], Map::new()),
                _ => {
                    let mut claims = Map::new();
                    claims.insert("role".into(), json!("admin"));
                    (vec![format!("admin-{i}-*")], claims)
                }
            };
            RawRule {
                topics,
                claims,
                effect: if i % 7 == 0 { "deny" } else { "allow" }.into(),
            }
        })
        .chain(std::iter::once(RawRule {
            topics: vec!["public-*".into()],
            claims: Map::new(),
            effect: "allow".into(),
        }))
        .collect();
    RawAcl {
        default: "deny".into(),
        rules,
    }
}

fn acl(c: &mut Criterion) {
    let raw = hundred_rules();
    let compiled = Acl::compile(&raw).expect("benchmark rules compile");
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from("alice"));
    claims.insert("role".into(), json!(["user", "admin"]));
    let identity = Identity {
        claims,
        expires_at: None,
    };
    let policy = compiled.bind(&identity);
    let mut group = c.benchmark_group("acl_100_rules");
    group.bench_function("compile", |b| b.iter(|| Acl::compile(black_box(&raw))));
    group.bench_function("bind", |b| b.iter(|| compiled.bind(black_box(&identity))));
    group.bench_function("check_last_rule", |b| {
        b.iter(|| policy.check(black_box("public-news")))
    });
    group.bench_function("check_templated_hit", |b| {
        b.iter(|| policy.check(black_box("user.alice.1.inbox")))
    });
    group.bench_function("check_no_match", |b| {
        b.iter(|| policy.check(black_box("nobody-matches-this")))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let small = br#"{"info":"Hello from Redis"}"#.to_vec();
    let kib = format!(
        r#"{{"items":[{}]}}"#,
        (0..40)
            .map(|i| format!(r#"{{"id":{i},"name":"item number {i}","ok":true}}"#))
            .collect::<Vec<_>>()
            .join(",")
    )
    .into_bytes();
    let text = b"plain text, not JSON: sent as a JSON string".to_vec();
    let mut group = c.benchmark_group("encode_delivery");
    for (name, payload) in [("small_json", &small), ("1kib_json", &kib), ("text", &text)] {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| protocol::encode_delivery(black_box("chat-room"), black_box(payload), None))
        });
    }
    group.finish();
}

/// A registry with `n` in-process subscribers of `topic`, subscribed
/// through the hub and the memory broker as sessions would be.
fn subscribed(n: usize, topic: &str) -> (Arc<Registry>, Vec<Arc<SendQueue>>) {
    let registry = Arc::new(Registry::new(Arc::new(Metrics::new())));
    let broker = Arc::new(MemoryBroker::new(registry.clone()));
    let hub = Hub::new(registry.clone(), broker);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut receivers = Vec::with_capacity(n);
    runtime.block_on(async {
        for id in 0..n as u64 {
            let client = ClientHandle::new(id, 8);
            hub.subscribe(topic, &client, Join::default())
                .await
                .expect("memory broker subscribes");
            receivers.push(client.queue().clone());
        }
    });
    // Drop the subscribe acks so every queue starts empty.
    drain(&mut receivers);
    (registry, receivers)
}

fn drain(receivers: &mut [Arc<SendQueue>]) -> usize {
    let mut frames = 0;
    for receiver in receivers.iter_mut() {
        while receiver.pop().is_some() {
            frames += 1;
        }
    }
    frames
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 10_000;
    let (registry, mut receivers) = subscribed(SUBSCRIBERS, "chat-room");
    let payload = br#"{"info":"Hello from Redis","seq":1}"#;
    let mut group = c.benchmark_group("hub_fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function("deliver_to_10k", |b| {
        // Only `deliver` is timed; the queues are drained between
        // iterations so none fills up and turns into a slow consumer.
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                registry.deliver(black_box(Delivery::new("chat-room", payload)));
                timed += start.elapsed();
                let frames = drain(&mut receivers);
                assert_eq!(frames, SUBSCRIBERS, "every subscriber gets the frame");
            }
            timed
        })
    });
    group.finish();
    // Subscribing itself: 10k clients through the hub and memory broker.
    let mut group = c.benchmark_group("hub_subscribe");
    group.sample_size(10);
    group.bench_function("subscribe_10k_one_topic", |b| {
        b.iter_batched(
            || (),
            |()| subscribed(SUBSCRIBERS, "chat-room"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// One `authorization` costs one signature check: what a client sending
/// forged tokens makes the gateway spend (docs/BENCHMARKS.md, "Failed
/// authorizations").
fn verify(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let claims = json!({"sub": "alice", "exp": topicgate::unix_now() + 3600});
    let mut group = c.benchmark_group("auth_verify");
    let cases: [(&str, Algorithm, &str, &str); 3] = [
        ("HS256", Algorithm::HS256, "", ""),
        ("RS256", Algorithm::RS256, "rs256.key.pem", "rs256.pub.pem"),
        ("ES256", Algorithm::ES256, "es256.key.pem", "es256.pub.pem"),
    ];
    for (name, alg, private, public) in cases {
        let (key, toml) = if private.is_empty() {
            let key = EncodingKey::from_secret(b"bench-secret").expect("key");
            (key, "secret = \"bench-secret\"".to_string())
        } else {
            let pem = std::fs::read(format!("{fixtures}/{private}")).expect("private key");
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                _ => EncodingKey::from_ec_pem(&pem),
            }
            .expect("key");
            (key, format!("public_key_file = \"{fixtures}/{public}\""))
        };
        let text =
            format!("[broker]\nkind = \"memory\"\n[auth.jwt]\nalgorithms = [\"{name}\"]\n{toml}\n");
        let config = topicgate::RawConfig::from_toml(&text)
            .expect("parses")
            .compile(std::path::Path::new("."))
            .expect("compiles");
        let token = encode(&Header::new(alg), &claims, &key).expect("sign");
        // A forged token: same header and claims, the signature of another
        // message. Verifying it costs the same check, then fails.
        let (signed, _) = token.rsplit_once('.').expect("three parts");
        let other = encode(&Header::new(alg), &json!({"sub": "mallory"}), &key).expect("sign");
        let forged = format!(
            "{signed}.{}",
            other.rsplit_once('.').expect("three parts").1
        );
        let now = topicgate::unix_now();
        assert!(config.auth.verify(&token, now).is_ok());
        assert!(config.auth.verify(&forged, now).is_err());
        group.bench_function(format!("{name}_forged"), |b| {
            b.iter(|| config.auth.verify(black_box(&forged), now))
        });
    }
    group.finish();
}

/// The write half of a session, as the connection's task polls it: 64
/// queued deliveries fed into a sink that discards them, then flushed.
/// Covers the queue's pop, the per-delivery metrics and the batching; the
/// socket write itself is the kernel's.
fn write(c: &mut Criterion) {
    const FRAMES: usize = 64;
    let queue = SendQueue::new(1024);
    let metrics = Metrics::new();
    let frame =
        protocol::encode_delivery("chat-room", br#"{"info":"Hello from Redis","seq":1}"#, None);
    let mut sink = futures_util::sink::drain().sink_map_err(|never| match never {});
    let mut writer = Writer::default();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut group = c.benchmark_group("session_writer");
    group.throughput(Throughput::Elements(FRAMES as u64));
    // With `server.write_delay_ms` set a full batch is never held back: the
    // second measures the write path's cost of keeping the delay's clock.
    for (name, delay_ms) in [
        ("write_64_deliveries", 0),
        ("write_64_deliveries_with_write_delay", 10),
    ] {
        writer.set_delay(std::time::Duration::from_millis(delay_ms));
        group.bench_function(name, |b| {
            b.iter(|| {
                let arrived = tokio::time::Instant::now();
                for _ in 0..FRAMES {
                    let outbound = Outbound::delivery(frame.clone(), arrived);
                    queue.push(outbound).expect("room");
                }
                let written = writer.poll_write(&mut sink, &queue, &metrics, &mut cx);
                assert!(written.is_pending(), "the sink never fails");
                assert!(queue.pop().is_none(), "every frame written");
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = hot_paths;
    config = quick();
    targets = decode, acl, encode, fanout, write, verify
}
criterion_main!(hot_paths);
