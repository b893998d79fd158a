//! Arbitrary bytes as a client text frame: decoding must never panic, and a
//! decoded request must satisfy the field rules of docs/PROTOCOL.md
//! (Requests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = topicgate::hot_paths::decode(text) {
        assert!(!request.session.is_empty());
        assert!(!request.context.is_empty());
        let _ = topicgate::hot_paths::validate_topic(&request.context);
    }
});
