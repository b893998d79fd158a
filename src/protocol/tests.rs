use super::*;

use serde_json::{Value, json};

/// Parses a frame as a JSON object, failing the test on anything else.
fn object(frame: &Frame) -> serde_json::Map<String, Value> {
    match serde_json::from_str::<Value>(frame.as_str()) {
        Ok(Value::Object(map)) => map,
        other => panic!("frame {:?} is not a JSON object: {other:?}", frame.as_str()),
    }
}

fn keys(map: &serde_json::Map<String, Value>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// Asserts the frame is exactly `expected`: same fields, same values.
fn assert_frame(frame: &Frame, expected: Value) {
    let parsed: Value = serde_json::from_str(frame.as_str()).unwrap();
    assert_eq!(parsed, expected, "frame {}", frame.as_str());
}

fn request(action: Action, session: &str, context: &str, id: Option<Id>) -> Request {
    Request {
        action,
        session: session.into(),
        context: context.into(),
        id,
        since: None,
    }
}

// ---- decode ----

#[test]
fn decode_accepts_each_action() {
    let cases = [
        (
            r#"{"action":"authorization","session":"s1","context":"a.b.c"}"#,
            Action::Authorization,
            "a.b.c",
        ),
        (
            r#"{"action":"subscribe","session":"s1","context":"chat-room"}"#,
            Action::Subscribe,
            "chat-room",
        ),
        (
            r#"{"action":"unsubscribe","session":"s1","context":"chat-room"}"#,
            Action::Unsubscribe,
            "chat-room",
        ),
    ];
    for (text, action, context) in cases {
        assert_eq!(
            decode(text),
            Ok(request(action, "s1", context, None)),
            "{text}"
        );
    }
}

#[test]
fn decode_refuses_every_bad_request_cause() {
    let cases = [
        // not JSON
        ("", "not valid JSON"),
        ("   ", "not valid JSON"),
        ("hello", "not valid JSON"),
        (r#"{"action":"subscribe""#, "not valid JSON"),
        (r#"{"action":"subscribe",}"#, "not valid JSON"),
        (
            r#"{"action":"subscribe","session":"s","context":"t"} x"#,
            "not valid JSON",
        ),
        (
            r#"{"action":"subscribe","session":"s","context":"t"}{}"#,
            "not valid JSON",
        ),
        ("[1,", "not valid JSON"),
        // not an object
        ("[]", "not a request object"),
        (r#"["subscribe","s","t"]"#, "not a request object"),
        (r#""subscribe""#, "not a request object"),
        ("42", "not a request object"),
        ("-1.5e3", "not a request object"),
        ("null", "not a request object"),
        ("true", "not a request object"),
        // missing or empty fields
        ("{}", "field action is missing"),
        (
            r#"{"session":"s","context":"t"}"#,
            "field action is missing",
        ),
        (
            r#"{"action":null,"session":"s","context":"t"}"#,
            "field action is missing",
        ),
        (
            r#"{"action":"","session":"s","context":"t"}"#,
            "field action is empty",
        ),
        (
            r#"{"action":"subscribe","context":"t"}"#,
            "field session is missing",
        ),
        (
            r#"{"action":"subscribe","session":"","context":"t"}"#,
            "field session is empty",
        ),
        (
            r#"{"action":"subscribe","session":"s"}"#,
            "field context is missing",
        ),
        (
            r#"{"action":"subscribe","session":"s","context":""}"#,
            "field context is empty",
        ),
        (
            r#"{"action":"authorization","session":"s","context":null}"#,
            "field context is missing",
        ),
        // wrong field types
        (
            r#"{"action":1,"session":"s","context":"t"}"#,
            "invalid request",
        ),
        (
            r#"{"action":"subscribe","session":["s"],"context":"t"}"#,
            "invalid request",
        ),
        (
            r#"{"action":"subscribe","session":"s","context":{"t":1}}"#,
            "invalid request",
        ),
        (
            r#"{"action":"subscribe","session":"s","context":true}"#,
            "invalid request",
        ),
        // a field given twice is ambiguous
        (
            r#"{"action":"subscribe","action":"unsubscribe","session":"s","context":"t"}"#,
            "invalid request",
        ),
        // id that is neither a string nor a number
        (
            r#"{"action":"subscribe","session":"s","context":"t","id":{"n":1}}"#,
            "id must be a string or a number",
        ),
        (
            r#"{"action":"subscribe","session":"s","context":"t","id":[1]}"#,
            "id must be a string or a number",
        ),
        (
            r#"{"action":"subscribe","session":"s","context":"t","id":true}"#,
            "id must be a string or a number",
        ),
    ];
    for (text, detail) in cases {
        let err = decode(text).expect_err(text);
        assert_eq!(err.code, ErrorCode::BadRequest, "{text}");
        assert!(
            err.detail.starts_with(detail),
            "{text}: detail {:?} should start with {detail:?}",
            err.detail
        );
        assert_eq!(err.id, None, "{text}");
    }
}

#[test]
fn decode_bad_request_keeps_a_readable_id() {
    let err = decode(r#"{"action":"subscribe","session":"s","id":"r1"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert_eq!(err.id, Some(Id::Str("r1".into())));

    let err = decode(r#"{"action":"","id":7}"#).unwrap_err();
    assert_eq!(err.id, Some(Id::Num(7.into())));
}

#[test]
fn decode_unknown_action() {
    let err = decode(r#"{"action":"publish","session":"s","context":"t","id":"x"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownAction);
    assert!(err.detail.contains(r#""publish""#), "{}", err.detail);
    assert_eq!(err.id, Some(Id::Str("x".into())));

    // Action names are case-sensitive, and an unknown action is reported
    // even when the other fields are missing.
    for text in [
        r#"{"action":"Subscribe","session":"s","context":"t"}"#,
        r#"{"action":"SUBSCRIBE"}"#,
        r#"{"action":" subscribe"}"#,
    ] {
        assert_eq!(
            decode(text).unwrap_err().code,
            ErrorCode::UnknownAction,
            "{text}"
        );
    }
}

#[test]
fn decode_truncates_a_long_unknown_action_in_detail() {
    let long = "x".repeat(10_000);
    let text = json!({"action": long, "session": "s", "context": "t"}).to_string();
    let err = decode(&text).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownAction);
    assert!(
        err.detail.len() < 200,
        "detail is {} bytes",
        err.detail.len()
    );
    assert!(err.detail.contains(&format!("\"{}\"…", "x".repeat(64))));

    // Truncation counts characters, so it never splits a multi-byte one.
    let long = "é😀".repeat(100);
    let text = json!({"action": long}).to_string();
    let err = decode(&text).unwrap_err();
    assert!(err.detail.contains(&format!("\"{}\"…", "é😀".repeat(32))));
}

#[test]
fn decode_ignores_unknown_fields() {
    let text = r#"{"action":"subscribe","session":"s","context":"t",
        "extra":{"deep":[1,2,{"x":null}]},"n":1,"Action":"nope","ts":"2024"}"#;
    assert_eq!(decode(text), Ok(request(Action::Subscribe, "s", "t", None)));
}

#[test]
fn decode_accepts_whitespace_and_any_field_order() {
    let text =
        " \n\t{ \"context\" : \"t\" ,\r\n \"session\":\"s\", \"action\":\"unsubscribe\" } \n";
    assert_eq!(
        decode(text),
        Ok(request(Action::Unsubscribe, "s", "t", None))
    );
}

#[test]
fn decode_echoes_string_and_number_ids() {
    let cases: [(&str, Option<Id>, &str); 9] = [
        (r#""r-1""#, Some(Id::Str("r-1".into())), r#""r-1""#),
        (r#""""#, Some(Id::Str(String::new())), r#""""#),
        ("7", Some(Id::Num(7.into())), "7"),
        ("0", Some(Id::Num(0.into())), "0"),
        ("-3", Some(Id::Num((-3).into())), "-3"),
        (
            "1.5",
            Some(Id::Num(serde_json::Number::from_f64(1.5).unwrap())),
            "1.5",
        ),
        (
            "12345678901234567890",
            Some(Id::Num(12345678901234567890u64.into())),
            "12345678901234567890",
        ),
        ("null", None, ""),
        (r#""\u00e9\n""#, Some(Id::Str("é\n".into())), r#""é\n""#),
    ];
    for (raw_id, id, echoed) in cases {
        let text = format!(r#"{{"action":"subscribe","session":"s","context":"t","id":{raw_id}}}"#);
        let req = decode(&text).unwrap();
        assert_eq!(req.id, id, "{text}");
        let frame = success(req.action, &req.context, req.id.as_ref());
        let reply = object(&frame);
        match id {
            Some(_) => {
                assert_eq!(reply["id"], serde_json::from_str::<Value>(raw_id).unwrap());
                assert!(
                    frame.as_str().contains(&format!(r#""id":{echoed}"#)),
                    "{frame}"
                );
            }
            None => assert!(!reply.contains_key("id"), "{frame}"),
        }
    }
}

#[test]
fn decode_does_not_panic_on_numbers_beyond_u64() {
    for raw_id in [
        "123456789012345678901234567890",
        "-99999999999999999999",
        "1e308",
    ] {
        let text = format!(r#"{{"action":"subscribe","session":"s","context":"t","id":{raw_id}}}"#);
        let req = decode(&text).unwrap();
        assert!(matches!(req.id, Some(Id::Num(_))), "{text}");
        object(&success(req.action, &req.context, req.id.as_ref()));
    }
    // Beyond f64 is refused by serde_json, as a bad request.
    let err =
        decode(r#"{"action":"subscribe","session":"s","context":"t","id":1e400}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
}

#[test]
fn decode_keeps_unicode_fields() {
    let text = json!({
        "action": "subscribe",
        "session": "séssion-😀",
        "context": "чат/房间 \"q\" \\",
        "id": "ид",
    })
    .to_string();
    assert_eq!(
        decode(&text),
        Ok(request(
            Action::Subscribe,
            "séssion-😀",
            "чат/房间 \"q\" \\",
            Some(Id::Str("ид".into()))
        ))
    );
    // Escaped forms decode to the same strings.
    let text = r#"{"action":"sub\u0073cribe","session":"s\u00e9","context":"\ud83d\ude00"}"#;
    assert_eq!(
        decode(text),
        Ok(request(Action::Subscribe, "sé", "😀", None))
    );
}

#[test]
fn decode_refuses_lone_surrogates_and_raw_control_characters() {
    for text in [
        r#"{"action":"subscribe","session":"s","context":"\ud800"}"#,
        "{\"action\":\"subscribe\",\"session\":\"s\",\"context\":\"a\nb\"}",
    ] {
        assert_eq!(
            decode(text).unwrap_err().code,
            ErrorCode::BadRequest,
            "{text}"
        );
    }
}

// ---- validate_topic ----

#[test]
fn validate_topic_counts_bytes_not_characters() {
    let ok = [
        "a".to_string(),
        "chat-room".to_string(),
        "user.42.*".to_string(),
        "a".repeat(256),
        "é".repeat(128),        // 256 bytes, 128 characters
        "😀".repeat(64),        // 256 bytes, 64 characters
        "ab€".repeat(51) + "x", // 5*51 + 1 = 256 bytes
        "spaces and / slashes".to_string(),
    ];
    for topic in ok {
        assert_eq!(validate_topic(&topic), Ok(()), "{} bytes", topic.len());
    }
    let too_long = [
        String::new(),
        "a".repeat(257),
        "é".repeat(128) + "a", // 257 bytes
        "😀".repeat(65),
        "é".repeat(200), // 200 characters, 400 bytes
    ];
    for topic in too_long {
        let err = validate_topic(&topic).unwrap_err();
        assert!(
            err.contains("1 to 256 bytes"),
            "{} bytes: {err}",
            topic.len()
        );
    }
}

#[test]
fn validate_topic_refuses_control_characters() {
    for topic in [
        "a\nb",
        "\u{0000}",
        "tab\there",
        "cr\r",
        "del\u{007f}",
        "nel\u{0085}",
        "\u{009f}",
        "\u{001b}[0m",
    ] {
        let err = validate_topic(topic).unwrap_err();
        assert!(err.contains("control"), "{topic:?}: {err}");
    }
    // Format and separator characters are not control characters (Cc).
    for topic in ["zero\u{200b}width", "line\u{2028}sep", "bom\u{feff}"] {
        assert_eq!(validate_topic(topic), Ok(()), "{topic:?}");
    }
}

// ---- replies ----

#[test]
fn greeting_frames() {
    let [connect, session] = greeting("0b7e9c3a-0000-4000-8000-000000000000");
    assert_frame(
        &connect,
        json!({"action":"connect","message":"connection established"}),
    );
    assert_frame(
        &session,
        json!({
            "action":"session",
            "message":"waiting for create session",
            "session":"0b7e9c3a-0000-4000-8000-000000000000",
        }),
    );
}

#[test]
fn success_replies_have_exactly_the_spec_fields() {
    let cases = [
        (
            Action::Authorization,
            json!({"action":"session","message":"session authenticated"}),
        ),
        (
            Action::Subscribe,
            json!({"action":"subscribe","message":"context subscribed","context":"chat-room"}),
        ),
        (
            Action::Unsubscribe,
            json!({"action":"unsubscribe","message":"context unsubscribed","context":"chat-room"}),
        ),
    ];
    for (action, expected) in cases {
        // The authorization context is the token: it must never be echoed.
        assert_frame(&success(action, "chat-room", None), expected.clone());

        let mut with_id = expected.clone();
        with_id["id"] = json!("r1");
        assert_frame(
            &success(action, "chat-room", Some(&Id::Str("r1".into()))),
            with_id,
        );
        let mut with_num = expected;
        with_num["id"] = json!(42);
        assert_frame(
            &success(action, "chat-room", Some(&Id::Num(42.into()))),
            with_num,
        );
    }
}

#[test]
fn failure_replies_follow_the_spec_table() {
    use Action::*;
    use ErrorCode::*;
    // (request action, code, expected action, expected message, carries context)
    let cases = [
        (Subscribe, BadRequest, "error", "bad request", false),
        (Authorization, BadRequest, "error", "bad request", false),
        (Unsubscribe, UnknownAction, "error", "unknown action", false),
        (
            Authorization,
            InvalidSession,
            "authorization",
            "invalid session",
            false,
        ),
        (
            Subscribe,
            InvalidSession,
            "subscribe",
            "invalid session",
            true,
        ),
        (
            Unsubscribe,
            InvalidSession,
            "unsubscribe",
            "invalid session",
            true,
        ),
        (
            Authorization,
            InvalidToken,
            "session",
            "session unauthorized",
            false,
        ),
        (
            Subscribe,
            Unauthenticated,
            "subscribe",
            "session unauthenticated",
            true,
        ),
        (
            Unsubscribe,
            Unauthenticated,
            "unsubscribe",
            "session unauthenticated",
            true,
        ),
        (Subscribe, Forbidden, "subscribe", "context forbidden", true),
        (
            Subscribe,
            LimitExceeded,
            "subscribe",
            "limit exceeded",
            true,
        ),
        (
            Authorization,
            LimitExceeded,
            "authorization",
            "limit exceeded",
            false,
        ),
        (
            Subscribe,
            Unavailable,
            "subscribe",
            "context unavailable",
            true,
        ),
    ];
    for (action, code, reply_action, message, with_context) in cases {
        let label = format!("{action:?}/{code:?}");
        let mut expected = json!({
            "action": reply_action,
            "message": message,
            "error": code.as_str(),
            "detail": "why",
        });
        if with_context {
            expected["context"] = json!("room");
        }
        assert_frame(
            &failure(action, code, "why", "room", None),
            expected.clone(),
        );

        expected["id"] = json!("r9");
        let frame = failure(action, code, "why", "room", Some(&Id::Str("r9".into())));
        assert_frame(&frame, expected);
        // The authorization context is the token: never echoed.
        if action == Authorization {
            assert!(!frame.as_str().contains("room"), "{label}: {frame}");
        }
    }
}

#[test]
fn forbidden_reply_matches_the_spec_example() {
    assert_frame(
        &failure(
            Action::Subscribe,
            ErrorCode::Forbidden,
            "no rule allows topic admin-room",
            "admin-room",
            None,
        ),
        json!({
            "action":"subscribe",
            "message":"context forbidden",
            "error":"forbidden",
            "detail":"no rule allows topic admin-room",
            "context":"admin-room",
        }),
    );
}

#[test]
fn failure_reply_escapes_detail_and_context() {
    let context = "q\"b\\s\u{2028}😀";
    let detail = "line\nbreak \"quoted\" \u{0000}";
    let reply = object(&failure(
        Action::Subscribe,
        ErrorCode::Forbidden,
        detail,
        context,
        None,
    ));
    assert_eq!(reply["context"], json!(context));
    assert_eq!(reply["detail"], json!(detail));
}

#[test]
fn decode_failure_replies() {
    let err = decode("nope").unwrap_err();
    let reply = object(&decode_failure(&err));
    assert_eq!(keys(&reply), ["action", "detail", "error", "message"]);
    assert_eq!(reply["action"], "error");
    assert_eq!(reply["error"], "bad_request");
    assert_eq!(reply["message"], "bad request");

    let err = decode(r#"{"action":"shout","id":3}"#).unwrap_err();
    let reply = object(&decode_failure(&err));
    assert_eq!(keys(&reply), ["action", "detail", "error", "id", "message"]);
    assert_eq!(reply["action"], "error");
    assert_eq!(reply["error"], "unknown_action");
    assert_eq!(reply["message"], "unknown action");
    assert_eq!(reply["id"], 3);
}

#[test]
fn revoked_frame() {
    assert_frame(
        &revoked("chat-room", "token expired"),
        json!({
            "action":"unsubscribe",
            "message":"context revoked",
            "context":"chat-room",
            "error":"forbidden",
            "detail":"token expired",
        }),
    );
}

#[test]
fn expired_frame() {
    assert_frame(
        &expired(),
        json!({"action":"session","message":"session expired","error":"token_expired"}),
    );
}

#[test]
fn disconnect_final_frames_and_close_codes() {
    let cases = [
        (Disconnect::TooLarge, "too_large", Some(1009)),
        (Disconnect::AuthTimeout, "auth_timeout", Some(1008)),
        (Disconnect::SlowConsumer, "slow_consumer", Some(1013)),
        (Disconnect::Shutdown, "shutdown", Some(1001)),
        (Disconnect::AuthFailures, "invalid_token", Some(1008)),
        // Idle peers are dropped without a close frame (docs/PROTOCOL.md, "Closing").
        (Disconnect::Idle, "idle_timeout", None),
    ];
    for (reason, code, close_code) in cases {
        assert_eq!(reason.code(), Some(code));
        assert_eq!(reason.close_code(), close_code, "{reason:?}");
        assert_frame(
            &reason.final_frame().unwrap(),
            json!({"action":"connect","message":"client disconnect","error":code}),
        );
    }
    assert_eq!(Disconnect::Gone.code(), None);
    assert_eq!(Disconnect::Gone.close_code(), None);
    assert_eq!(Disconnect::Gone.final_frame(), None);
    assert_eq!(Disconnect::Internal.final_frame(), None);
    assert_eq!(Disconnect::Internal.close_code(), Some(1011));
}

#[test]
fn every_error_code_is_distinct_snake_case() {
    use ErrorCode::*;
    let all = [
        BadRequest,
        UnknownAction,
        InvalidSession,
        InvalidToken,
        Unauthenticated,
        Forbidden,
        LimitExceeded,
        Unavailable,
    ];
    let mut names: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
    for name in &names {
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{name}"
        );
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
}

// ---- encode_delivery ----

/// Decodes a delivery frame, checking its exact field set and topic.
fn delivery(topic: &str, payload: &[u8]) -> Value {
    let frame = encode_delivery(topic, payload, None);
    let mut map = object(&frame);
    assert_eq!(keys(&map), ["action", "snapshot", "topic"], "{frame}");
    assert_eq!(map["action"], "message", "{frame}");
    assert_eq!(map["topic"], json!(topic), "{frame}");
    map.remove("snapshot").unwrap()
}

#[test]
fn delivery_matches_the_spec_example() {
    assert_eq!(
        encode_delivery("chat-room", br#"{"info":"Hello from Redis"}"#, None).as_str(),
        r#"{"action":"message","topic":"chat-room","snapshot":{"info":"Hello from Redis"}}"#
    );
}

#[test]
fn delivery_embeds_json_payloads_as_json() {
    let cases: [(&[u8], Value); 12] = [
        (
            br#"{"a":1,"b":[true,null]}"#,
            json!({"a":1,"b":[true,null]}),
        ),
        (b"[1,\"two\",{}]", json!([1, "two", {}])),
        (b"{}", json!({})),
        (b"[]", json!([])),
        (b"42", json!(42)),
        (b"-0.5e-3", json!(-0.0005)),
        (br#""text""#, json!("text")),
        (
            br#""esc \"q\" \u00e9 \ud83d\ude00""#,
            json!("esc \"q\" é 😀"),
        ),
        (b"true", json!(true)),
        (b"false", json!(false)),
        (b"null", Value::Null),
        (
            "{\"ключ\":\"значение\"}".as_bytes(),
            json!({"ключ":"значение"}),
        ),
    ];
    for (payload, expected) in cases {
        let label = String::from_utf8_lossy(payload);
        assert_eq!(delivery("t", payload), expected, "{label}");
    }
}

#[test]
fn delivery_keeps_the_payload_text_of_json() {
    // Embedded as published: numbers keep their exact form, key order stays.
    let frame = encode_delivery("t", br#"{"z":1.50,"a":12345678901234567890123}"#, None);
    assert!(
        frame
            .as_str()
            .ends_with(r#""snapshot":{"z":1.50,"a":12345678901234567890123}}"#),
        "{frame}"
    );
}

#[test]
fn delivery_trims_surrounding_json_whitespace() {
    for payload in [" {\"a\":1} ", "\n\t{\"a\":1}\r\n", "  {\"a\":1}"] {
        let frame = encode_delivery("t", payload.as_bytes(), None);
        assert!(
            frame.as_str().ends_with(r#""snapshot":{"a":1}}"#),
            "{frame}"
        );
    }
    // Whitespace that JSON does not allow makes the payload plain text.
    let payload = "\u{a0}{\"a\":1}";
    assert_eq!(delivery("t", payload.as_bytes()), json!(payload));
}

#[test]
fn delivery_sends_non_json_as_a_string() {
    let cases = [
        "hello",
        "",
        "   ",
        "{not json}",
        "{\"a\":1} trailing",
        "{\"a\":1}{\"b\":2}",
        "1 2",
        "[1,]",
        "'single'",
        "NaN",
        "Infinity",
        "0x10",
        "01",
        ".5",
        "\"unterminated",
        "\"raw\ncontrol\"",
        "\u{feff}{\"bom\":true}",
        "{\"a\":1}\u{0}",
        "<xml/>",
        "😀 emoji",
    ];
    for payload in cases {
        assert_eq!(
            delivery("t", payload.as_bytes()),
            json!(payload),
            "{payload:?}"
        );
    }
}

#[test]
fn delivery_refuses_json_that_strict_parsers_refuse() {
    // serde's IgnoredAny accepts these (it skips escapes and numbers
    // unchecked); embedded raw they would make the frame unparsable for
    // strict clients, so they travel as strings.
    for payload in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#"{"k":"\ud83d"}"#,
        r#"{"\udfff":1}"#,
        r#"["ok","\ud800x"]"#,
        "1e400",
        "[-1e999]",
    ] {
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(payload).is_ok());
        assert_eq!(
            delivery("t", payload.as_bytes()),
            json!(payload),
            "{payload}"
        );
    }
    let nested = "{\"a\":".repeat(127) + "1" + &"}".repeat(127);
    assert_eq!(delivery("t", nested.as_bytes()), json!(nested));
    // A valid surrogate pair is fine.
    assert_eq!(delivery("t", br#""\ud83d\ude00""#), json!("😀"));
}

#[test]
fn delivery_of_deeply_nested_json_stays_parsable() {
    for depth in [1, 100, 126, 127, 128, 10_000] {
        let payload = "[".repeat(depth) + &"]".repeat(depth);
        let snapshot = delivery("t", payload.as_bytes());
        // While the whole frame stays within serde_json's recursion limit
        // the payload is JSON, beyond it a string: either way it parses.
        if depth <= 126 {
            assert!(snapshot.is_array(), "depth {depth}");
        } else {
            assert_eq!(snapshot, json!(payload), "depth {depth}");
        }
    }
}

#[test]
fn delivery_of_invalid_utf8_is_valid_json() {
    let cases: [&[u8]; 6] = [
        b"\xff",
        b"\xc3",
        b"abc\xed\xa0\x80def", // UTF-8 encoded surrogate
        b"{\"a\":\"\xff\"}",
        b"\xf0\x9f\x98",
        b"\x00\x01\x02\xfe",
    ];
    for payload in cases {
        let expected = String::from_utf8_lossy(payload).into_owned();
        assert_eq!(delivery("t", payload), json!(expected), "{payload:?}");
    }
}

#[test]
fn delivery_escapes_the_topic() {
    for topic in [
        "quote\"d",
        "back\\slash",
        "ünïcødé/房间",
        "😀",
        "line\u{2028}sep",
        "</script>",
        "ctl\u{1}",
    ] {
        assert_eq!(delivery(topic, b"1"), json!(1), "{topic:?}");
    }
}

// ---- fuzz-ish ----

/// A tiny deterministic generator, so failures reproduce without new crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that steer random inputs toward JSON edge cases.
const PIECES: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b" ",
    b"\n",
    b"\t",
    b"0",
    b"1",
    b"-",
    b".",
    b"e",
    b"E+",
    b"9999999999999999999999",
    b"1e400",
    b"true",
    b"false",
    b"null",
    b"nul",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\n",
    b"\\\"",
    b"\\x",
    b"a",
    b"Z",
    b"action",
    b"subscribe",
    b"session",
    b"context",
    b"id",
    b"\"action\":\"subscribe\"",
    b"\"session\":\"s\"",
    b"\"context\":\"t\"",
    b"\"id\":",
    "é".as_bytes(),
    "😀".as_bytes(),
    "\u{2028}".as_bytes(),
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
];

fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(24) {
        if rng.below(4) == 0 {
            out.push(rng.next() as u8);
        } else {
            out.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
    }
    out
}

/// Mostly valid JSON text (string escapes and numbers included), sometimes
/// with a strict-parser trap in it (lone surrogate, out-of-range number).
fn random_json(rng: &mut XorShift, depth: usize) -> String {
    const SCALARS: &[&str] = &[
        "0",
        "-1",
        "1.5",
        "2e10",
        "-0.0",
        "12345678901234567890123",
        "1e400",
        "true",
        "false",
        "null",
        r#""""#,
        r#""a""#,
        r#""\n\"\\""#,
        r#""\u00e9""#,
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
        r#""😀 é""#,
        r#""\u2028""#,
    ];
    match rng.below(if depth == 0 { 1 } else { 4 }) {
        0 => SCALARS[rng.below(SCALARS.len())].to_string(),
        1 => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| random_json(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    let key = SCALARS[10 + rng.below(SCALARS.len() - 10)];
                    format!("{key}:{}", random_json(rng, depth - 1))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// A request-shaped object with random field values, to reach past the
/// "not an object" checks.
fn random_request(rng: &mut XorShift) -> String {
    let mut fields = Vec::new();
    for name in ["action", "session", "context", "id", "other"] {
        if rng.below(5) == 0 {
            continue;
        }
        let value = match rng.below(8) {
            0..=2 if name == "action" => r#""subscribe""#.to_string(),
            0..=4 => serde_json::to_string(&String::from_utf8_lossy(&random_bytes(rng))).unwrap(),
            5 => random_json(rng, 2),
            6 => (rng.next() % 1000).to_string(),
            _ => String::from_utf8_lossy(&random_bytes(rng)).into_owned(),
        };
        fields.push(format!("\"{name}\":{value}"));
    }
    format!("{{{}}}", fields.join(","))
}

#[test]
fn fuzz_decode_and_encode_delivery_never_panic_and_stay_valid_json() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // How often each interesting path was taken, so the inputs stay useful.
    let (mut embedded, mut decoded) = (0, 0);
    for round in 0..4000 {
        let mut bytes = match round % 3 {
            0 => random_bytes(&mut rng),
            _ => random_json(&mut rng, 4).into_bytes(),
        };
        if round % 5 == 0 && !bytes.is_empty() {
            // Corrupt one byte: JSON that is almost valid.
            let at = rng.below(bytes.len());
            bytes[at] = PIECES[rng.below(PIECES.len())][0];
        }

        // encode_delivery: always a valid frame with exactly three fields;
        // the snapshot is the payload's JSON exactly when a strict parser
        // accepts it, else the payload as a string.
        let topic = String::from_utf8_lossy(&random_bytes(&mut rng)).into_owned();
        let snapshot = delivery(&topic, &bytes);
        let expected = match std::str::from_utf8(&bytes).map(serde_json::from_str::<Value>) {
            Ok(Ok(value)) => {
                embedded += 1;
                value
            }
            _ => json!(String::from_utf8_lossy(&bytes)),
        };
        assert_eq!(snapshot, expected, "round {round}: payload {bytes:?}");

        // decode: any text gives a request or an error, and its reply parses.
        let text = if round % 2 == 0 {
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            random_request(&mut rng)
        };
        match decode(&text) {
            Ok(req) => {
                decoded += 1;
                assert!(!req.session.is_empty() && !req.context.is_empty());
                object(&success(req.action, &req.context, req.id.as_ref()));
                object(&failure(
                    req.action,
                    ErrorCode::Forbidden,
                    &text,
                    &req.context,
                    req.id.as_ref(),
                ));
            }
            Err(err) => {
                let reply = object(&decode_failure(&err));
                assert_eq!(reply["action"], "error", "round {round}: {text:?}");
            }
        }
        let _ = validate_topic(&text);
    }
    assert!(embedded > 500, "only {embedded} JSON payloads");
    assert!(decoded > 50, "only {decoded} decoded requests");
}

#[test]
fn a_frame_is_a_four_word_handle_whose_clones_share_the_bytes() {
    assert_eq!(size_of::<Frame>(), 4 * size_of::<usize>());
    let frame = encode_delivery("chat", br#"{"text":"hello"}"#, None);
    let queued = frame.clone();
    assert_eq!(queued.as_str().as_ptr(), frame.as_str().as_ptr());
}

// ---- history: since, positions, gap ----

#[test]
fn a_subscribe_carries_its_since() {
    let request = decode(
        r#"{"action":"subscribe","session":"s","context":"t","since":{"epoch":"k3x9","offset":40}}"#,
    )
    .unwrap();
    assert_eq!(
        request.since,
        Some(Since {
            epoch: "k3x9".into(),
            offset: 40
        })
    );
    let request =
        decode(r#"{"action":"subscribe","session":"s","context":"t","since":null}"#).unwrap();
    assert_eq!(request.since, None);
}

#[test]
fn a_since_of_bad_shape_is_a_bad_request() {
    for since in [
        r#""k3x9:40""#,
        r#"{"epoch":"k3x9"}"#,
        r#"{"offset":40}"#,
        r#"{"epoch":7,"offset":40}"#,
        r#"{"epoch":"k3x9","offset":-1}"#,
        r#"{"epoch":"k3x9","offset":1.5}"#,
        r#"{"epoch":"k3x9","offset":"40"}"#,
        r#"[1,2]"#,
    ] {
        let text = format!(
            r#"{{"action":"subscribe","session":"s","context":"t","id":3,"since":{since}}}"#
        );
        let err = decode(&text).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest, "{since}");
        assert_eq!(err.id, Some(Id::Num(3.into())), "{since}");
    }
}

#[test]
fn other_actions_ignore_since() {
    let request =
        decode(r#"{"action":"unsubscribe","session":"s","context":"t","since":"junk"}"#).unwrap();
    assert_eq!(request.since, None);
}

#[test]
fn a_recorded_delivery_adds_offset_and_epoch() {
    assert_eq!(
        encode_delivery("chat-room", br#"{"text":"hi"}"#, Some((42, "k3x9"))).as_str(),
        r#"{"action":"message","topic":"chat-room","snapshot":{"text":"hi"},"offset":42,"epoch":"k3x9"}"#
    );
}

#[test]
fn a_subscribe_reply_carries_exactly_the_history_fields_given() {
    assert_frame(
        &subscribed("t", None, Some((7, "e1")), None, None),
        json!({"action":"subscribe","message":"context subscribed","context":"t","epoch":"e1","offset":7}),
    );
    assert_frame(
        &subscribed(
            "t",
            Some(&Id::Num(1.into())),
            Some((7, "e1")),
            Some(false),
            Some("why"),
        ),
        json!({"action":"subscribe","message":"context subscribed","context":"t","epoch":"e1",
               "offset":7,"recovered":false,"detail":"why","id":1}),
    );
    assert_frame(
        &gap("t", (3, "e2")),
        json!({"action":"gap","message":"history lost","context":"t","epoch":"e2","offset":3}),
    );
}
