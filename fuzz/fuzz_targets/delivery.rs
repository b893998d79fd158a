//! Arbitrary Redis payloads: the delivery frame is always one valid JSON
//! object with exactly `action`, `topic` and `snapshot`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = topicgate::hot_paths::encode_delivery("fuzz-topic", data, None);
    let value: serde_json::Value = match serde_json::from_str(&frame) {
        Ok(value) => value,
        Err(err) => panic!("invalid delivery JSON ({err}): {frame}"),
    };
    assert_eq!(value.as_object().map(|o| o.len()), Some(3));
    assert_eq!(value["topic"], "fuzz-topic");
});
