use redis::Value;

use super::actor::topic_of;
use super::slots::SlotMap;
use super::*;

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// One `CLUSTER SLOTS` entry: a range, its master, one replica.
fn entry(first: i64, last: i64, host: &str, port: i64) -> Value {
    Value::Array(vec![
        Value::Int(first),
        Value::Int(last),
        Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
        Value::Array(vec![bulk(host), Value::Int(port + 100), bulk("replica-id")]),
    ])
}

#[test]
fn key_slot_matches_redis() {
    // Values from `CLUSTER KEYSLOT` on Redis 7.
    assert_eq!(key_slot(b"foo"), 12182);
    assert_eq!(key_slot(b"bar"), 5061);
    assert_eq!(key_slot(b"123456789"), 12739);
    assert_eq!(key_slot(b""), 0);
    // A hash tag hashes only what is inside the first {...}.
    assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    assert_eq!(key_slot(b"a{b}{c}"), key_slot(b"b"));
    // An empty or unclosed tag hashes the whole name.
    assert_eq!(key_slot(b"{}.x"), 7237);
    assert_ne!(key_slot(b"{}.x"), key_slot(b""));
    assert_eq!(key_slot(b"x{y"), 2740);
}

#[test]
fn slot_map_finds_each_slots_master() {
    let reply = Value::Array(vec![
        entry(10923, 16383, "10.0.0.3", 7002),
        entry(0, 5460, "10.0.0.1", 7000),
        entry(5461, 10922, "", 7001),
    ]);
    let map = SlotMap::parse(&reply, "10.0.0.9").unwrap();
    let owner = |slot| map.owner(slot).map(|node| node.to_string());
    assert_eq!(owner(0).as_deref(), Some("10.0.0.1:7000"));
    assert_eq!(owner(5460).as_deref(), Some("10.0.0.1:7000"));
    // An empty host is the node that answered.
    assert_eq!(owner(5461).as_deref(), Some("10.0.0.9:7001"));
    assert_eq!(owner(16383).as_deref(), Some("10.0.0.3:7002"));
    assert_eq!(owner(16384), None);
    assert_eq!(map.masters.len(), 3);
    assert_eq!(
        map.masters[&Node::from("10.0.0.9:7001")],
        ("10.0.0.9".to_string(), 7001)
    );
}

#[test]
fn slot_map_leaves_gaps_unowned_and_merges_a_masters_ranges() {
    let reply = Value::Array(vec![
        entry(0, 99, "a", 1),
        entry(200, 299, "a", 1),
        entry(300, 16383, "b", 2),
    ]);
    let map = SlotMap::parse(&reply, "x").unwrap();
    assert_eq!(map.owner(150), None);
    assert_eq!(map.owner(99).map(|n| &**n), Some("a:1"));
    assert_eq!(map.owner(200).map(|n| &**n), Some("a:1"));
    assert_eq!(map.masters.len(), 2);
    assert_eq!(
        SlotMap::parse(&Value::Array(vec![]), "x").unwrap().owner(0),
        None
    );
}

#[test]
fn malformed_cluster_slots_replies_are_errors() {
    let cases = [
        Value::Nil,
        Value::Array(vec![Value::Int(1)]),
        Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(10)])]),
        Value::Array(vec![entry(0, 16384, "a", 1)]),
        Value::Array(vec![entry(10, 5, "a", 1)]),
        Value::Array(vec![entry(0, 10, "a", 70000)]),
        Value::Array(vec![entry(0, 10, "a", 1), entry(10, 20, "b", 2)]),
        Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(1),
            Value::Array(vec![Value::Int(5), Value::Int(1)]),
        ])]),
    ];
    for reply in cases {
        assert!(SlotMap::parse(&reply, "x").is_err(), "{reply:?}");
    }
}

#[test]
fn channels_map_back_to_topics_only_with_the_prefix() {
    assert_eq!(topic_of(b"tg:chat", "tg:"), Some("chat"));
    assert_eq!(topic_of(b"chat", ""), Some("chat"));
    assert_eq!(topic_of(b"other:chat", "tg:"), None);
    assert_eq!(topic_of(b"tg:\xff", "tg:"), None);
}

#[test]
fn node_connections_keep_the_seeds_credentials_and_tls() {
    let settings = |nodes: &[&str], password: Option<&str>| Redis {
        url: String::new(),
        password: password.map(str::to_string),
        pool_size: 1,
        channel_prefix: String::new(),
        reconnect_max: Duration::from_secs(1),
        health_check: Duration::from_secs(5),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
    };
    let seeds = Seeds::new(&settings(&["rediss://user:pw@seed.example:7000"], None)).unwrap();
    let info = seeds.node_info("10.0.0.2", 7001);
    assert!(matches!(
        info.addr(),
        ConnectionAddr::TcpTls { host, port: 7001, .. } if host == "10.0.0.2"
    ));
    assert_eq!(info.redis_settings().password(), Some("pw"));
    assert_eq!(info.redis_settings().username(), Some("user"));
    assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP3);

    let seeds = Seeds::new(&settings(&["redis://seed:7000"], Some("override"))).unwrap();
    let info = seeds.node_info("10.0.0.3", 7002);
    assert!(matches!(info.addr(), ConnectionAddr::Tcp(host, 7002) if host == "10.0.0.3"));
    assert_eq!(info.redis_settings().password(), Some("override"));

    assert!(Seeds::new(&settings(&[], None)).is_err());
}

#[tokio::test]
async fn publishing_to_unreachable_seeds_names_them() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port");
    let settings = Redis {
        url: String::new(),
        password: Some("hunter2".into()),
        pool_size: 1,
        channel_prefix: String::new(),
        reconnect_max: Duration::from_secs(1),
        health_check: Duration::from_secs(5),
        nodes: vec![format!("redis://127.0.0.1:{port}")],
    };
    let library = Arc::new(Library::new(HistorySettings::default(), true));
    let publisher = Arc::new(Publisher::new(&settings, library));
    let err = publisher
        .publish("t".into(), Bytes::from_static(b"x"))
        .await
        .expect_err("nothing listens");
    assert_eq!(
        err,
        BrokerError::NotConnected {
            addr: format!("127.0.0.1:{port}"),
            cause: Some("connection refused".into()),
        }
    );
    assert!(!err.to_string().contains("hunter2"));
}
