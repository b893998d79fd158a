//! `GET /console` (README, Web console): the built-in web console, one
//! self-contained HTML page compiled into the binary.
//!
//! The page speaks the protocol of docs/PROTOCOL.md over
//! `ws(s)://<same host>/ws` and publishes through `POST /publish`, so it
//! needs nothing but this gateway. `server.console` is read per request
//! because it reloads live: turning it off hides the page at once, with the
//! same 404 as an unknown path.

use std::sync::Arc;

use http::{HeaderValue, Response, header};
use warp::Filter;

use crate::state::Shared;

/// The page: inline CSS and JS, no external URL, so it works offline and
/// behind any proxy that forwards `/ws`.
const PAGE: &str = include_str!("console.html");

/// The page loads nothing from elsewhere; the policy makes that a rule the
/// browser enforces. `ws:`/`wss:` are listed because not every browser
/// counts the same-origin WebSocket as `'self'`.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src data:; \
     base-uri 'none'; frame-ancestors 'none'";

pub fn route(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path!("console")
        .and(enabled(shared))
        .and(warp::get())
        .map(page)
}

/// Passes while `server.console` is on. Checked before the method, so a
/// disabled console is a 404 for every method, not a 405.
fn enabled(shared: Arc<Shared>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::any()
        .and_then(move || {
            let on = shared.config.borrow().server.console;
            async move {
                if on {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
}

fn page() -> warp::reply::Response {
    let mut response = Response::new(PAGE.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // A `?token=` in the address must not travel on to other sites.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page changes with the binary; revalidate rather than serve a stale one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
