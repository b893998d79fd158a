//! Server frames: every reply, notice and delivery the server sends is
//! encoded here (docs/PROTOCOL.md, "Frames").

use serde::Serialize;

use super::json::{JSON_WHITESPACE, is_strict_json};
use super::{Action, DecodeError, ErrorCode, Id};

/// A text frame ready for the socket: a four-word handle on shared bytes.
/// Cloning shares the bytes, so one encoded delivery is queued to every
/// subscriber without copying: each queue holds a handle, not the text.
pub type Frame = tokio_tungstenite::tungstenite::Utf8Bytes;

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
    pub epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
}

/// A position in a topic's history as frames carry it: offset and epoch.
pub type Mark<'a> = (u64, &'a str);

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

/// Success reply to a subscribe of a topic that has a history
/// (docs/PROTOCOL.md, "Positions and recovery"): the position live delivery
/// starts after, and with `since` whether the missed range follows
/// (`detail` says why not).
pub fn subscribed(
    topic: &str,
    id: Option<&Id>,
    position: Option<Mark<'_>>,
    recovered: Option<bool>,
    detail: Option<&str>,
) -> Frame {
    encode(&Reply {
        action: "subscribe",
        message: "context subscribed",
        context: Some(topic),
        detail,
        offset: position.map(|(offset, _)| offset),
        epoch: position.map(|(_, epoch)| epoch),
        recovered,
        id,
        ..Reply::default()
    })
}

/// A topic's missing range is gone: delivery goes on after `position`
/// (docs/PROTOCOL.md, "Positions and recovery").
pub fn gap(topic: &str, position: Mark<'_>) -> Frame {
    encode(&Reply {
        action: "gap",
        message: "history lost",
        context: Some(topic),
        offset: Some(position.0),
        epoch: Some(position.1),
        ..Reply::default()
    })
}

/// Failure reply to a decoded request, with the reply action docs/PROTOCOL.md
/// ("Errors") gives.
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

/// The server removed a subscription (docs/PROTOCOL.md, "Revocation").
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

/// The session's token expired (docs/PROTOCOL.md, "Token lifetime").
pub fn expired() -> Frame {
    Frame::from_static(
        r#"{"action":"session","message":"session expired","error":"token_expired"}"#,
    )
}

/// Encodes a broker message into its delivery frame (docs/PROTOCOL.md,
/// "Delivery"), once per replica.
/// `snapshot` is the payload itself when it is valid JSON, else a JSON string;
/// a recorded message adds its `offset` and `epoch`.
pub fn encode_delivery(topic: &str, payload: &[u8], position: Option<Mark<'_>>) -> Frame {
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
    if let Some((offset, epoch)) = position {
        out.push_str(r#","offset":"#);
        out.push_str(&offset.to_string());
        out.push_str(r#","epoch":"#);
        push_json_string(&mut out, epoch);
    }
    out.push('}');
    Frame::from(out)
}

fn push_json_string(out: &mut String, text: &str) {
    // serde_json escapes exactly as JSON requires; writing to a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}
