//! The HTTP edge: [`serve`] accepts TCP connections and serves them with
//! hyper (header timeout, keep-alive idle timeout, a cap on connections not
//! yet upgraded), and the warp routes answer: the WebSocket upgrade on `/`
//! and `/ws` (`upgrade`), `/healthz`, `/readyz`, `/metrics` and
//! `POST /publish` (`publish`), `/console`.

mod publish;
mod serve;
mod upgrade;

pub(crate) use serve::serve;

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};
use warp::Filter;

use crate::state::Shared;

type Body = warp::reply::Response;

pub fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Body,), Error = std::convert::Infallible> + Clone {
    healthz()
        .or(readyz(shared.clone()))
        .unify()
        .or(metrics(shared.clone()))
        .unify()
        .or(publish::route(shared.clone()))
        .unify()
        .or(crate::console::route(shared.clone()))
        .unify()
        .or(upgrade::route(shared))
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            Ok::<_, std::convert::Infallible>(rejected(&rejection))
        })
        .unify()
}

/// The one place rejections become responses.
fn rejected(rejection: &warp::Rejection) -> Body {
    use warp::reject::{LengthRequired, MethodNotAllowed, PayloadTooLarge};
    if rejection.find::<PayloadTooLarge>().is_some() {
        plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")
    } else if rejection.find::<LengthRequired>().is_some() {
        plain(StatusCode::LENGTH_REQUIRED, "content-length required\n")
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
    } else {
        plain(StatusCode::NOT_FOUND, "not found\n")
    }
}

fn with_state(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Arc<Shared>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || shared.clone())
}

fn plain(status: StatusCode, text: &'static str) -> Body {
    let mut response = Response::new(text.into());
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Body {
    let mut response = Response::new(value.to_string().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn healthz() -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| plain(StatusCode::OK, "ok\n"))
}

fn readyz(shared: Arc<Shared>) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("readyz")
        .and(warp::get())
        .and(with_state(shared))
        .map(|shared: Arc<Shared>| {
            let broker = shared.hub.broker();
            let ready = *broker.ready().borrow();
            let config = shared.config.borrow().clone();
            let redis = match (broker.kind(), ready) {
                ("memory", _) => "unused",
                (_, true) => "up",
                (_, false) => "down",
            };
            let body = serde_json::json!({
                "redis": redis,
                "broker": broker.kind(),
                "bypass": config.auth.mode == crate::auth::Mode::Bypass,
                "history": broker.history_status().as_str(),
                "connections": shared.connections.count(),
                "config": {"hash": config.hash, "loaded_at": config.loaded_at},
            });
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        })
}

fn metrics(shared: Arc<Shared>) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(shared))
        .map(|shared: Arc<Shared>| {
            let mut response = Response::new(shared.metrics.render().into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        })
}
