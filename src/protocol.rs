//! The wire protocol of SPEC §1: client requests in, server frames out.
//!
//! Decoding is strict about what SPEC requires (an object with non-empty
//! `action`, `session`, `context` strings) and ignores unknown fields.
//! Every frame the server sends is built here, so the exact field sets of
//! SPEC §1 live in one place.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A text frame ready for the socket; cloning shares the bytes, so one
/// encoded delivery is queued to every subscriber without copying.
pub type Frame = tokio_tungstenite::tungstenite::Utf8Bytes;

/// Longest topic accepted, in bytes (SPEC §1).
pub const MAX_TOPIC_BYTES: usize = 256;

/// The only whitespace JSON allows around a value (RFC 8259 §2); `str::trim`
/// would also strip Unicode spaces that are not JSON.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Authorization,
    Subscribe,
    Unsubscribe,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Authorization => "authorization",
            Action::Subscribe => "subscribe",
            Action::Unsubscribe => "unsubscribe",
        }
    }
}

/// The optional client correlation id, echoed in the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Str(String),
    Num(serde_json::Number),
}

/// A well-formed client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub action: Action,
    pub session: String,
    /// The token for `authorization`, the topic otherwise.
    pub context: String,
    pub id: Option<Id>,
}

/// A request that could not be decoded; answered with action `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub detail: String,
    /// The request's `id` when it could be read, so the reply still matches.
    pub id: Option<Id>,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    context: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    let bad = |detail: String, id: Option<Id>| DecodeError {
        code: ErrorCode::BadRequest,
        detail,
        id,
    };
    // serde's derived struct impl also accepts a JSON array of the fields in
    // order (`["subscribe","S","T"]`); SPEC §1 requests are objects only.
    if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
        let detail = match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => "not a request object: expected a JSON object".to_string(),
            Err(err) => format!("not valid JSON: {err}"),
        };
        return Err(bad(detail, None));
    }
    let raw: RawRequest = serde_json::from_str(text).map_err(|err| {
        let detail = if err.is_syntax() || err.is_eof() {
            format!("not valid JSON: {err}")
        } else {
            format!("invalid request: {err}")
        };
        bad(detail, None)
    })?;
    let id = match raw.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Id::Str(s)),
        Some(Value::Number(n)) => Some(Id::Num(n)),
        Some(_) => return Err(bad("id must be a string or a number".into(), None)),
    };
    let field = |name: &str, value: Option<Cow<'_, str>>, id: &Option<Id>| match value {
        Some(v) if !v.is_empty() => Ok(v.into_owned()),
        Some(_) => Err(bad(format!("field {name} is empty"), id.clone())),
        None => Err(bad(format!("field {name} is missing"), id.clone())),
    };
    let action_name = field("action", raw.action, &id)?;
    let action = match action_name.as_str() {
        "authorization" => Action::Authorization,
        "subscribe" => Action::Subscribe,
        "unsubscribe" => Action::Unsubscribe,
        other => {
            return Err(DecodeError {
                code: ErrorCode::UnknownAction,
                detail: format!(
                    "unknown action {}; expected authorization, subscribe or unsubscribe",
                    truncate(other, 64)
                ),
                id,
            });
        }
    };
    let session = field("session", raw.session, &id)?;
    let context = field("context", raw.context, &id)?;
    Ok(Request {
        action,
        session,
        context,
        id,
    })
}

/// Checks a topic against SPEC §1: 1–256 bytes, no control characters.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return Err(format!("topic must be 1 to {MAX_TOPIC_BYTES} bytes"));
    }
    if topic.chars().any(char::is_control) {
        return Err("topic must not contain control characters".into());
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// SPEC §1 error codes of replies that keep the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnknownAction,
    InvalidSession,
    InvalidToken,
    Unauthenticated,
    Forbidden,
    LimitExceeded,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidSession => "invalid_session",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownAction => "unknown action",
            ErrorCode::InvalidSession => "invalid session",
            ErrorCode::InvalidToken => "session unauthorized",
            ErrorCode::Unauthenticated => "session unauthenticated",
            ErrorCode::Forbidden => "context forbidden",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::Unavailable => "context unavailable",
        }
    }
}

/// Why the server closes a connection (SPEC §1), with its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed or the socket failed: nothing more is sent.
    Gone,
    TooLarge,
    AuthTimeout,
    Idle,
    SlowConsumer,
    Shutdown,
}

impl Disconnect {
    /// The `error` code of the final frame, or `None` when nothing is sent.
    pub fn code(self) -> Option<&'static str> {
        match self {
            Disconnect::Gone => None,
            Disconnect::TooLarge => Some("too_large"),
            Disconnect::AuthTimeout => Some("auth_timeout"),
            Disconnect::Idle => Some("idle_timeout"),
            Disconnect::SlowConsumer => Some("slow_consumer"),
            Disconnect::Shutdown => Some("shutdown"),
        }
    }

    /// WebSocket close code; `None` when the TCP connection is just dropped.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Disconnect::Gone | Disconnect::Idle => None,
            Disconnect::TooLarge => Some(1009),
            Disconnect::AuthTimeout => Some(1008),
            Disconnect::SlowConsumer => Some(1013),
            Disconnect::Shutdown => Some(1001),
        }
    }

    pub fn final_frame(self) -> Option<Frame> {
        let code = self.code()?;
        Some(encode(&Reply {
            action: "connect",
            message: "client disconnect",
            error: Some(code),
            ..Reply::default()
        }))
    }
}

/// Every non-delivery server frame; `None` fields are left out.
#[derive(Debug, Default, Serialize)]
pub struct Reply<'a> {
    pub action: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
}

pub fn encode(reply: &Reply<'_>) -> Frame {
    match serde_json::to_string(reply) {
        Ok(text) => Frame::from(text),
        // Serializing plain strings cannot fail; keep the socket protocol intact anyway.
        Err(_) => Frame::from_static(r#"{"action":"error","message":"internal error"}"#),
    }
}

/// The two frames sent on connect.
pub fn greeting(session: &str) -> [Frame; 2] {
    [
        Frame::from_static(r#"{"action":"connect","message":"connection established"}"#),
        encode(&Reply {
            action: "session",
            message: "waiting for create session",
            session: Some(session),
            ..Reply::default()
        }),
    ]
}

/// Success reply to a request.
pub fn success(action: Action, context: &str, id: Option<&Id>) -> Frame {
    let (action, message, context) = match action {
        Action::Authorization => ("session", "session authenticated", None),
        Action::Subscribe => ("subscribe", "context subscribed", Some(context)),
        Action::Unsubscribe => ("unsubscribe", "context unsubscribed", Some(context)),
    };
    encode(&Reply {
        action,
        message,
        context,
        id,
        ..Reply::default()
    })
}

/// Failure reply to a decoded request, with the reply action SPEC §1 gives.
pub fn failure(
    action: Action,
    code: ErrorCode,
    detail: &str,
    context: &str,
    id: Option<&Id>,
) -> Frame {
    let reply_action = match (code, action) {
        (ErrorCode::BadRequest | ErrorCode::UnknownAction, _) => "error",
        (ErrorCode::InvalidToken, _) => "session",
        (_, action) => action.as_str(),
    };
    let context = match action {
        Action::Subscribe | Action::Unsubscribe if reply_action != "error" => Some(context),
        _ => None,
    };
    encode(&Reply {
        action: reply_action,
        message: code.message(),
        context,
        error: Some(code.as_str()),
        detail: Some(detail),
        id,
        ..Reply::default()
    })
}

/// Failure reply to a frame that is not a request.
pub fn decode_failure(err: &DecodeError) -> Frame {
    encode(&Reply {
        action: "error",
        message: err.code.message(),
        error: Some(err.code.as_str()),
        detail: Some(&err.detail),
        id: err.id.as_ref(),
        ..Reply::default()
    })
}

/// The server removed a subscription (SPEC §1 Revocation).
pub fn revoked(topic: &str, detail: &str) -> Frame {
    encode(&Reply {
        action: "unsubscribe",
        message: "context revoked",
        context: Some(topic),
        error: Some("forbidden"),
        detail: Some(detail),
        ..Reply::default()
    })
}

/// The session's token expired (SPEC §1 Token lifetime).
pub fn expired() -> Frame {
    Frame::from_static(
        r#"{"action":"session","message":"session expired","error":"token_expired"}"#,
    )
}

/// Encodes a broker message into its delivery frame, once per replica.
/// `snapshot` is the payload itself when it is valid JSON, else a JSON string.
pub fn encode_delivery(topic: &str, payload: &[u8]) -> Frame {
    const HEAD: &str = r#"{"action":"message","topic":"#;
    let mut out = String::with_capacity(HEAD.len() + topic.len() + payload.len() + 24);
    out.push_str(HEAD);
    push_json_string(&mut out, topic);
    out.push_str(r#","snapshot":"#);
    match std::str::from_utf8(payload) {
        Ok(text) if is_strict_json(text) => out.push_str(text.trim_matches(JSON_WHITESPACE)),
        Ok(text) => push_json_string(&mut out, text),
        Err(_) => push_json_string(&mut out, &String::from_utf8_lossy(payload)),
    }
    out.push('}');
    Frame::from(out)
}

/// Deepest nesting of a payload embedded as JSON. serde_json, so every Rust
/// client, refuses text nested deeper than 127 arrays/objects, and the
/// delivery frame wraps the snapshot in one more object.
const MAX_SNAPSHOT_DEPTH: usize = 126;

/// Whether `text` is one JSON value that strict readers accept.
///
/// `IgnoredAny` is not enough to vet a payload embedded raw: it skips string
/// escapes and numbers unchecked, so it passes `"\ud800"` (a lone surrogate)
/// and `1e400` (out of range), which `serde_json::Value`, Go and other strict
/// clients refuse, losing the whole delivery frame. [`StrictJson`] decodes
/// every string and number (in serde_json's scratch buffer, nothing kept) and
/// bounds the nesting; a refused payload then travels as a JSON string like
/// any other non-JSON text.
fn is_strict_json(text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = StrictJson {
        depth_left: MAX_SNAPSHOT_DEPTH,
    };
    seed.deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// Walks one JSON value, refusing what strict readers refuse.
#[derive(Clone, Copy)]
struct StrictJson {
    /// Arrays/objects that may still open inside this value.
    depth_left: usize,
}

impl StrictJson {
    fn inner<E: de::Error>(self) -> Result<Self, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(StrictJson { depth_left }),
            None => Err(E::custom("nested too deeply")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictJson {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictJson {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        // Keys are strings, decoded (so checked) by the same visitor.
        while map.next_entry_seed(inner, inner)?.is_some() {}
        Ok(())
    }
}

fn push_json_string(out: &mut String, text: &str) {
    // serde_json escapes exactly as JSON requires; writing to a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests;
