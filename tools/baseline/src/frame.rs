//! The frames the baseline sends, spelled exactly as the gateway spells
//! them (docs/PROTOCOL.md, "Frames"): same fields, same order, so the load
//! tool's prefix scans and a byte-for-byte test both hold.

use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Every frame but a delivery; `None` fields are left out.
#[derive(Default, Serialize)]
struct Reply<'a> {
    action: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

impl Reply<'_> {
    fn encode(&self) -> Utf8Bytes {
        // Serializing strings and an already parsed `Value` cannot fail.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

/// The two frames sent on connect (docs/PROTOCOL.md, "Connect").
pub fn greeting(session: &str) -> [Utf8Bytes; 2] {
    let connect = ("connect", "connection established", None);
    let session = ("session", "waiting for create session", Some(session));
    [connect, session].map(|(action, message, session)| {
        Reply {
            action,
            message,
            session,
            ..Reply::default()
        }
        .encode()
    })
}

/// The success reply to `action` (docs/PROTOCOL.md, "Requests").
pub fn success(action: &str, context: &str, id: Option<&Value>) -> Utf8Bytes {
    let (action, message, context) = match action {
        "authorization" => ("session", "session authenticated", None),
        "subscribe" => ("subscribe", "context subscribed", Some(context)),
        _ => ("unsubscribe", "context unsubscribed", Some(context)),
    };
    Reply {
        action,
        message,
        context,
        id,
        ..Reply::default()
    }
    .encode()
}

/// The failures the baseline answers (docs/PROTOCOL.md, "Errors").
#[derive(Clone, Copy)]
pub enum Failure {
    BadRequest,
    UnknownAction,
    InvalidSession,
    InvalidToken,
    Unauthenticated,
    Unavailable,
}

/// A failure reply. Codes that concern a request's topic answer with the
/// request's `action` and its `topic`; the others with a fixed action.
pub fn failure(
    failure: Failure,
    action: &str,
    topic: Option<&str>,
    detail: &str,
    id: Option<&Value>,
) -> Utf8Bytes {
    let (fixed_action, message, error) = match failure {
        Failure::BadRequest => (Some("error"), "bad request", "bad_request"),
        Failure::UnknownAction => (Some("error"), "unknown action", "unknown_action"),
        Failure::InvalidSession => (None, "invalid session", "invalid_session"),
        Failure::InvalidToken => (Some("session"), "session unauthorized", "invalid_token"),
        Failure::Unauthenticated => (None, "session unauthenticated", "unauthenticated"),
        Failure::Unavailable => (None, "context unavailable", "unavailable"),
    };
    let (action, context) = match fixed_action {
        Some(fixed) => (fixed, None),
        None => (action, topic),
    };
    Reply {
        action,
        message,
        context,
        error: Some(error),
        detail: Some(detail),
        id,
        ..Reply::default()
    }
    .encode()
}

/// `{"action":"message","topic":T,"snapshot":S}`: S is the payload itself
/// when it is one JSON value (JSON whitespace around it trimmed), else the
/// payload as a JSON string (docs/PROTOCOL.md, "Delivery").
///
/// "Is JSON" is serde_json's own check; the gateway's stricter one also
/// sends lone surrogate escapes, out-of-range numbers and very deep nesting
/// as strings. Publishers of ordinary JSON see no difference.
pub fn delivery(topic: &str, payload: &[u8]) -> Utf8Bytes {
    const HEAD: &str = r#"{"action":"message","topic":"#;
    let mut out = String::with_capacity(HEAD.len() + topic.len() + payload.len() + 24);
    out.push_str(HEAD);
    push_json_string(&mut out, topic);
    out.push_str(r#","snapshot":"#);
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
            out.push_str(text.trim_matches([' ', '\t', '\n', '\r']));
        }
        Ok(text) => push_json_string(&mut out, text),
        Err(_) => push_json_string(&mut out, &String::from_utf8_lossy(payload)),
    }
    out.push('}');
    out.into()
}

fn push_json_string(out: &mut String, text: &str) {
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}
