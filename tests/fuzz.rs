//! Property tests: arbitrary input never panics the decoder, the delivery
//! encoder, or a live session, and every client frame gets exactly one reply.

use topicgate_test_support as common;

use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use topicgate::Gateway;
use topicgate::hot_paths as protocol;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What the test sends on one frame.
#[derive(Debug, Clone)]
enum Input {
    Text(String),
    Json(Value),
    Binary(Vec<u8>),
    /// A request-shaped object; `own_session` picks the real session id.
    Request {
        action: String,
        own_session: bool,
        context: String,
        id: Value,
    },
}

fn input() -> impl Strategy<Value = Input> {
    let action = prop_oneof![
        Just("authorization".to_string()),
        Just("subscribe".to_string()),
        Just("unsubscribe".to_string()),
        "[a-z]{0,12}",
    ];
    let context = prop_oneof![
        "pub-[a-z*?{},\\[\\]]{0,10}",
        "\\PC{0,40}",
        any::<String>(),
        "[a-z]{250,260}",
    ];
    let id = prop_oneof![
        Just(Value::Null),
        "[a-z0-9]{0,8}".prop_map(Value::String),
        any::<i32>().prop_map(|n| json!(n)),
        Just(json!({"nested": true})),
    ];
    prop_oneof![
        any::<String>().prop_map(Input::Text),
        json_value().prop_map(Input::Json),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Input::Binary),
        (action, any::<bool>(), context, id).prop_map(|(action, own_session, context, id)| {
            Input::Request {
                action,
                own_session,
                context,
                id,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = protocol::decode(&text);
    }

    #[test]
    fn decoding_arbitrary_json_never_panics(value in json_value()) {
        let _ = protocol::decode(&value.to_string());
    }

    #[test]
    fn any_payload_encodes_to_a_valid_delivery(topic in "\\PC{1,40}", payload in prop::collection::vec(any::<u8>(), 0..200)) {
        let frame = protocol::encode_delivery(&topic, &payload, None);
        let value: Value = serde_json::from_str(&frame).expect("delivery is JSON");
        prop_assert_eq!(&value["topic"], &json!(topic));
        prop_assert_eq!(value.as_object().map(|o| o.len()), Some(3));
    }
}

/// One gateway for every case: bypass mode, no claim-dependent rules (so a
/// re-authorization never revokes and replies stay one per frame).
fn runtime_and_gateway() -> &'static (tokio::runtime::Runtime, Gateway) {
    static SHARED: OnceLock<(tokio::runtime::Runtime, Gateway)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = config(
            "[broker]\nkind = \"memory\"\n[auth]\nmode = \"bypass\"\n\
             [limits]\nrequests_per_sec = 100000\nrequest_burst = 100000\nmax_subscriptions = 5\n\
             [acl]\ndefault = \"deny\"\n\
             [[acl.rules]]\ntopics = [\"pub-secret*\"]\neffect = \"deny\"\n\
             [[acl.rules]]\ntopics = [\"pub-*\"]\neffect = \"allow\"\n",
        );
        let gateway = runtime.block_on(start_gateway(config));
        (runtime, gateway)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_frame_gets_exactly_one_reply_and_the_session_survives(inputs in prop::collection::vec(input(), 1..24)) {
        let (runtime, gateway) = runtime_and_gateway();
        runtime.block_on(async {
            let mut c = Client::connect(gateway.addr).await;
            let other = uuid::Uuid::new_v4().to_string();
            for input in &inputs {
                match input {
                    Input::Text(text) => c.send_text(text).await,
                    Input::Json(value) => c.send_json(value).await,
                    Input::Binary(bytes) => c.send_message(Message::binary(bytes.clone())).await,
                    Input::Request { action, own_session, context, id } => {
                        let session = if *own_session { c.session.clone() } else { other.clone() };
                        c.send_json(&json!({"action": action, "session": session, "context": context, "id": id})).await;
                    }
                }
            }
            let session = c.session.clone();
            c.send_json(&json!({"action":"unsubscribe","session":session,"context":"pub-end","id":"sentinel"})).await;
            let mut replies = 0;
            loop {
                let frame = c.recv().await;
                assert!(frame.get("action").is_some_and(Value::is_string), "{frame}");
                if frame["id"] == "sentinel" {
                    assert_eq!(frame["message"], "context unsubscribed");
                    break;
                }
                replies += 1;
            }
            assert_eq!(replies, inputs.len(), "one reply per frame for {inputs:?}");
            c.close().await;
        });
    }
}
