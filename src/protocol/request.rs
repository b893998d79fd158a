//! Client requests: one text frame in, a [`Request`] or the reason it is
//! refused out (docs/PROTOCOL.md, "Requests").

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ErrorCode;
use super::json::JSON_WHITESPACE;

/// Longest topic accepted, in bytes (docs/PROTOCOL.md, "Requests").
pub const MAX_TOPIC_BYTES: usize = 256;

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

/// The longest string `id` a reply echoes (docs/PROTOCOL.md, "Requests").
pub const MAX_ID_BYTES: usize = 128;

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
    /// A subscribe's `since`: the last position the client saw.
    pub since: Option<Since>,
}

/// The position a recovering subscribe names (docs/PROTOCOL.md,
/// "Positions and recovery").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
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
    #[serde(default)]
    since: Option<Value>,
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    let bad = |detail: String, id: Option<Id>| DecodeError {
        code: ErrorCode::BadRequest,
        detail,
        id,
    };
    // serde's derived struct impl also accepts a JSON array of the fields in
    // order (`["subscribe","S","T"]`); requests are objects only.
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
        // Echoing a long id would let one small request pin a large reply;
        // such an id is refused without being echoed.
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => {
            return Err(bad(format!("id is longer than {MAX_ID_BYTES} bytes"), None));
        }
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
    // Only a subscribe reads `since`; other actions ignore it like any
    // unknown field.
    let since = match (action, raw.since) {
        (Action::Subscribe, Some(value)) => {
            since(value).map_err(|detail| bad(detail, id.clone()))?
        }
        _ => None,
    };
    Ok(Request {
        action,
        session,
        context,
        id,
        since,
    })
}

/// `since` must be `{"epoch": string, "offset": integer >= 0}`; `null` is
/// the same as no `since`.
fn since(value: Value) -> Result<Option<Since>, String> {
    const SHAPE: &str = r#"since must be {"epoch": string, "offset": integer >= 0}"#;
    let object = match value {
        Value::Null => return Ok(None),
        Value::Object(object) => object,
        _ => return Err(SHAPE.into()),
    };
    let epoch = match object.get("epoch") {
        Some(Value::String(epoch)) => epoch.clone(),
        _ => return Err(SHAPE.into()),
    };
    let offset = object
        .get("offset")
        .and_then(Value::as_u64)
        .ok_or_else(|| SHAPE.to_string())?;
    Ok(Some(Since { epoch, offset }))
}

/// Checks a topic (docs/PROTOCOL.md, "Requests"): 1–256 bytes, no control
/// characters.
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
