//! topicgate: a WebSocket gateway that bridges Redis Pub/Sub to clients.
//!
//! # Layout
//!
//! A client connects over WebSocket: [`http`] checks the upgrade and hands
//! the socket to [`session`], one task pair per connection that speaks the
//! JSON protocol of [`protocol`]. An `authorization` request goes through
//! [`auth`] (token -> identity with claims) and binds the [`acl`] rules to
//! that identity once; each `subscribe` is then a lookup in that policy.
//! Subscriptions go to the [`hub`], which keeps topic -> local subscribers
//! and asks the [`broker`] (Redis, Redis Cluster or in-memory) for one
//! subscription per topic per replica.
//!
//! Messages flow back the other way: Redis -> broker -> hub, which encodes
//! each message once and queues the same bytes to every subscriber's
//! bounded queue -> each session's writer -> socket.
//!
//! [`config`] turns the TOML file and environment into a validated,
//! compiled [`config::Config`]; [`server`] wires it all on a bound listener
//! and shares the config through a `watch` channel, so a new config reaches
//! every session, which re-checks its subscriptions; `config::watch`
//! feeds that channel from the file (hot reload, SIGHUP). [`metrics`] holds
//! the Prometheus series, one registry per gateway. [`shutdown`] turns
//! SIGINT/SIGTERM into the drain. [`console`] serves the built-in web
//! console, one self-contained page that speaks the same protocol.

pub mod acl;
pub mod auth;
pub mod broker;
pub mod config;
pub mod console;
pub mod http;
pub mod hub;
mod issues;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod shutdown;
mod sync;
