use std::io;

use redis::{ErrorKind, RedisError, Value};

use super::*;

const ADDR: &str = "10.0.0.1:6379";

/// The error Redis answers with `line` (a RESP error, e.g. `-NOPERM ...`).
fn server_error(line: &str) -> RedisError {
    let value = redis::parse_redis_value(format!("{line}\r\n").as_bytes()).expect("resp");
    assert!(matches!(value, Value::ServerError(_)), "{value:?}");
    value.extract_error().expect_err("a server error")
}

#[test]
fn a_refused_connection_is_not_connected_with_the_address() {
    let err = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
    let mapped = from_redis(&err, ADDR, "PUBLISH");
    assert_eq!(
        mapped,
        BrokerError::NotConnected {
            addr: ADDR.into(),
            cause: Some("connection refused".into()),
        }
    );
    assert_eq!(
        mapped.to_string(),
        "redis unavailable at 10.0.0.1:6379: connection refused"
    );
}

#[test]
fn a_wrapped_io_failure_keeps_the_system_s_words() {
    let err = RedisError::from((
        ErrorKind::Io,
        "Failed to create initial connections",
        "Connection refused (os error 111)".to_string(),
    ));
    let mapped = from_redis(&err, ADDR, "the connection attempt");
    assert_eq!(
        mapped.to_string(),
        "redis unavailable at 10.0.0.1:6379: connection refused"
    );
}

#[test]
fn a_dropped_connection_is_not_connected() {
    let err = RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset));
    assert_eq!(
        from_redis(&err, ADDR, "SUBSCRIBE"),
        BrokerError::NotConnected {
            addr: ADDR.into(),
            cause: Some("connection lost".into()),
        }
    );
}

#[test]
fn an_io_timeout_is_a_timeout() {
    let err = RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
    let mapped = from_redis(&err, ADDR, "PUBLISH");
    assert_eq!(
        mapped,
        BrokerError::Timeout {
            addr: ADDR.into(),
            what: "PUBLISH"
        }
    );
    assert_eq!(
        mapped.to_string(),
        "redis at 10.0.0.1:6379 did not answer PUBLISH in time"
    );
}

#[test]
fn a_wrong_or_missing_password_is_authentication_refused() {
    let refused = BrokerError::AuthRefused { addr: ADDR.into() };
    let resp2 = RedisError::from((
        ErrorKind::AuthenticationFailed,
        "Password authentication failed",
    ));
    assert_eq!(from_redis(&resp2, ADDR, "PUBLISH"), refused);
    let hello = server_error("-WRONGPASS invalid username-password pair or user is disabled.");
    assert_eq!(from_redis(&hello, ADDR, "HELLO"), refused);
    let noauth = server_error("-NOAUTH Authentication required.");
    assert_eq!(from_redis(&noauth, ADDR, "PUBLISH"), refused);
    assert_eq!(
        refused.to_string(),
        "redis refused authentication at 10.0.0.1:6379"
    );
    assert!(refused.hint().is_some());
}

#[test]
fn an_error_reply_is_refused_with_its_code_and_detail() {
    let err = server_error("-NOPERM User app has no permissions to run the 'publish' command");
    let mapped = from_redis(&err, ADDR, "PUBLISH");
    assert_eq!(
        mapped.to_string(),
        "redis at 10.0.0.1:6379 refused PUBLISH: \
         NOPERM User app has no permissions to run the 'publish' command"
    );
    assert_eq!(mapped.hint(), None);
}

#[test]
fn pool_failures_say_what_happened_without_the_pool_s_words() {
    use deadpool_redis::{PoolError, TimeoutType};
    let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
    let cases = [
        (
            PoolError::Backend(refused),
            "redis unavailable at 10.0.0.1:6379: connection refused",
        ),
        (
            PoolError::Timeout(TimeoutType::Create),
            "redis at 10.0.0.1:6379 did not answer the connection attempt in time",
        ),
        (
            PoolError::Timeout(TimeoutType::Wait),
            "redis at 10.0.0.1:6379 did not answer PUBLISH in time",
        ),
        (PoolError::Closed, "broker stopped"),
    ];
    for (err, text) in cases {
        let mapped = from_pool(&err, ADDR).to_string();
        assert_eq!(mapped, text);
        assert!(!mapped.contains("object"), "{mapped}");
    }
}

#[test]
fn not_connected_without_a_cause_names_only_the_address() {
    assert_eq!(
        BrokerError::not_connected(ADDR).to_string(),
        "redis unavailable at 10.0.0.1:6379"
    );
}
