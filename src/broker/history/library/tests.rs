use std::time::Duration;

use super::*;
use crate::broker::Recorded;

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

#[test]
fn the_settings_and_broker_kind_are_written_into_the_library() {
    let settings = |size, secs| HistorySettings {
        size,
        ttl: Duration::from_secs(secs),
    };
    let library = Library::new(settings(25, 90), true);
    assert!(library.code().starts_with("#!lua name=topicgate\n"));
    assert!(library.code().contains("local SIZE = 25 "));
    assert!(library.code().contains("local TTL = 90 "));
    assert!(library.code().contains("local SHARDED = true "));
    assert!(!library.code().contains("__"));
    // EXPIRE 0 would drop the history at once.
    let library = Library::new(settings(0, 0), false);
    assert!(library.code().contains("local TTL = 1 "));
    assert!(library.code().contains("local SHARDED = false "));
    assert_eq!(library.status(), HistoryStatus::Off);
    assert!(!library.records());
    // Huge settings saturate to numbers Lua still writes as integers.
    let library = Library::new(settings(usize::MAX, u64::MAX), false);
    assert!(
        library
            .code()
            .contains(&format!("local SIZE = {} ", 1u64 << 40))
    );
    assert!(library.code().contains("local TTL = 3153600000 "));
}

#[test]
fn a_refused_library_is_unavailable_until_loaded_again() {
    let library = Library::new(HistorySettings::default(), false);
    assert_eq!(library.status(), HistoryStatus::Available);
    library.set_loaded(false);
    assert_eq!(library.status(), HistoryStatus::Unavailable);
    assert!(!library.records());
    library.set_loaded(true);
    assert_eq!(library.status(), HistoryStatus::Available);
}

#[test]
fn publish_replies_read_as_positions() {
    let reply = Value::Array(vec![Value::Int(42), bulk("k3x9")]);
    assert_eq!(position_of(&reply), Ok(Some(Position::new(42, "k3x9"))));
    assert_eq!(position_of(&Value::Nil), Ok(None));
    for bad in [
        Value::Int(42),
        Value::Array(vec![Value::Int(-1), bulk("e")]),
        Value::Array(vec![bulk("1"), bulk("e")]),
        Value::Array(vec![Value::Int(1)]),
        Value::Array(vec![Value::Int(1), Value::BulkString(vec![0xff])]),
    ] {
        assert!(position_of(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn history_replies_read_as_ranges() {
    assert_eq!(range_of(&Value::Nil), Ok(Range::none()));
    let reply = Value::Array(vec![
        bulk("e1"),
        Value::Int(5),
        Value::Int(4),
        bulk("four"),
        Value::Int(5),
        bulk("five"),
    ]);
    let record = |offset, payload: &'static str| Recorded {
        offset,
        payload: bytes::Bytes::from_static(payload.as_bytes()),
    };
    assert_eq!(
        range_of(&reply),
        Ok(Range {
            last: Some(Position::new(5, "e1")),
            messages: vec![record(4, "four"), record(5, "five")],
        })
    );
    let bare = Value::Array(vec![bulk("e1"), Value::Int(5)]);
    assert_eq!(range_of(&bare).map(|r| r.messages.len()), Ok(0));
    for bad in [
        Value::Int(1),
        Value::Array(vec![bulk("e1")]),
        Value::Array(vec![bulk("e1"), Value::Int(5), Value::Int(5)]),
        Value::Array(vec![bulk("e1"), Value::Int(5), bulk("5"), bulk("x")]),
        Value::Array(vec![
            bulk("e1"),
            Value::Int(5),
            Value::Int(5),
            Value::Int(1),
        ]),
    ] {
        assert!(range_of(&bad).is_err(), "{bad:?}");
    }
}
