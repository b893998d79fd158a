//! `POST /publish` (README, HTTP): publishes through the
//! broker, so through Redis on the redis broker, and every replica's
//! subscribers receive it.
//!
//! The request is judged from its head before a body byte is read: no
//! `api.key` is 404, a missing or wrong key 401, a `Content-Length` above
//! `limits.max_message_bytes` 413. Only then is the body read, chunk by
//! chunk, up to that size (a chunked body is cut at the limit with 413)
//! and within [`BODY_TIMEOUT`] (408 after it), so an unauthenticated or
//! slow client costs neither memory nor a task for long.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use http::{Response, StatusCode};
use warp::Filter;
use warp::hyper::body::Bytes;

use super::{Body, json, plain, with_state};
use crate::config::Config;
use crate::state::Shared;

/// How long a publish body may take to arrive once the head is accepted.
/// A body is at most `limits.max_message_bytes`: a few seconds carry it on
/// any link a publisher uses.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(serde::Deserialize)]
struct PublishBody {
    topic: String,
    data: serde_json::Value,
}

pub(super) fn route(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("publish")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and(with_state(shared))
        .and_then(
            |authorization: Option<String>, length: Option<u64>, body, shared: Arc<Shared>| async move {
                let config = shared.config.borrow().clone();
                if let Some(refusal) = refusal(authorization.as_deref(), length, &config) {
                    return Ok::<_, warp::Rejection>(refusal);
                }
                let limit = config.limits.max_message_bytes;
                let reply = match read_bounded(body, limit, BODY_TIMEOUT).await {
                    Ok(body) => publish(&body, &shared).await,
                    Err(err) => err.reply(),
                };
                Ok(reply)
            },
        )
}

fn error_json(status: StatusCode, error: &str, detail: &str) -> Body {
    json(
        status,
        &serde_json::json!({"error": error, "detail": detail}),
    )
}

/// What the request head alone decides: a refusal, or `None` to read on.
fn refusal(authorization: Option<&str>, length: Option<u64>, config: &Config) -> Option<Body> {
    use subtle::ConstantTimeEq;
    let Some(key) = &config.api_key else {
        return Some(plain(StatusCode::NOT_FOUND, "not found\n"));
    };
    let presented = authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time, so the key cannot be guessed byte by byte from timings.
    if !bool::from(presented.as_bytes().ct_eq(key.as_bytes())) {
        return Some(error_json(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <api.key>",
        ));
    }
    let limit = config.limits.max_message_bytes;
    if length.is_some_and(|length| length > limit as u64) {
        return Some(BodyError::TooLarge(limit).reply());
    }
    None
}

/// Why a body was not read whole.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    /// More than this many bytes.
    TooLarge(usize),
    /// Not complete within [`BODY_TIMEOUT`].
    TimedOut,
    /// The connection failed or closed mid-body.
    Broken,
}

impl BodyError {
    fn reply(&self) -> Body {
        match self {
            Self::TooLarge(limit) => error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("the body exceeds limits.max_message_bytes ({limit})"),
            ),
            Self::TimedOut => error_json(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                &format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ),
            Self::Broken => error_json(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body ended early",
            ),
        }
    }
}

/// Reads `body` whole, refusing it as soon as it passes `limit` bytes or
/// `timeout` elapses: never more than `limit` bytes are held.
async fn read_bounded<S, B, E>(
    body: S,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|_| BodyError::Broken)?;
            if out.len().saturating_add(chunk.remaining()) > limit {
                return Err(BodyError::TooLarge(limit));
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn publish(body: &[u8], shared: &Shared) -> Body {
    let request: PublishBody = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => {
            let detail = format!("expected {{\"topic\": ..., \"data\": ...}}: {err}");
            return error_json(StatusCode::BAD_REQUEST, "bad_request", &detail);
        }
    };
    if let Err(detail) = crate::protocol::validate_topic(&request.topic) {
        return error_json(StatusCode::BAD_REQUEST, "bad_request", &detail);
    }
    // A JSON string travels as its raw text, like `redis-cli PUBLISH t text`.
    let payload = match request.data {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    match shared
        .hub
        .broker()
        .publish(&request.topic, payload.into())
        .await
    {
        Ok(Some(position)) => {
            // By hand, for the documented field order (serde_json sorts keys).
            let (offset, epoch) = (position.offset, serde_json::Value::from(&*position.epoch));
            let mut response = json(StatusCode::OK, &serde_json::Value::Null);
            *response.body_mut() = format!(r#"{{"offset":{offset},"epoch":{epoch}}}"#).into();
            response
        }
        Ok(None) => {
            let mut response = Response::new(Bytes::new().into());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err(err) => {
            // The broker's errors name the Redis by address, never with
            // the URL's password, and not in a client library's words.
            tracing::warn!(error = %err, topic = %request.topic, "publish failed");
            error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &err.to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, ()>> {
        futures_util::stream::iter(parts.iter().map(|part| Ok(Bytes::from_static(part))))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = read_bounded(chunks(&[b"ab", b"cd"]), 4, BODY_TIMEOUT).await;
        assert_eq!(body, Ok(b"abcd".to_vec()));
    }

    #[tokio::test]
    async fn a_body_is_refused_at_the_chunk_that_passes_the_limit() {
        // The stream would go on forever: reading stops at the limit.
        let endless = futures_util::stream::repeat(Ok::<_, ()>(Bytes::from_static(b"xyz")));
        let body = read_bounded(endless, 10, BODY_TIMEOUT).await;
        assert_eq!(body, Err(BodyError::TooLarge(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_dropped_after_the_timeout() {
        let stalled = chunks(&[b"{\"topic\""]).chain(futures_util::stream::pending());
        let body = read_bounded(stalled, 100, BODY_TIMEOUT).await;
        assert_eq!(body, Err(BodyError::TimedOut));
    }

    #[tokio::test]
    async fn a_broken_body_is_refused() {
        let broken = futures_util::stream::iter([Ok(Bytes::from_static(b"{")), Err(())]);
        let body = read_bounded(broken, 100, BODY_TIMEOUT).await;
        assert_eq!(body, Err(BodyError::Broken));
    }
}
