//! topicgate: a WebSocket gateway that bridges Redis Pub/Sub to clients.
//!
//! # Layout
//!
//! A client connects over WebSocket: `http` accepts the TCP connection
//! (a header timeout, a cap on connections not yet upgraded), checks the
//! upgrade and hands the socket to `session`, one task per connection
//! that speaks the JSON protocol of `protocol` (`docs/PROTOCOL.md`). An `authorization`
//! request goes through `auth` (token -> identity with claims) and binds
//! the `acl` rules to that identity once; each `subscribe` is then a lookup
//! in that policy. Subscriptions go to the `hub`, which keeps topic ->
//! local subscribers and asks the `broker` (Redis, Redis Cluster or
//! in-memory) for one subscription per topic per replica.
//!
//! Messages flow back the other way: Redis -> broker -> hub, which encodes
//! each message once and queues the same bytes to every subscriber's
//! bounded queue -> the connection's task, which writes it -> socket.
//!
//! `config` turns the TOML file and environment into a validated, compiled
//! [`Config`]; `server` wires it all on a bound listener as a [`Gateway`]
//! and shares the config through a `watch` channel, so a new config reaches
//! every session, which re-checks its subscriptions; `config::watch` feeds
//! that channel from the file (hot reload, SIGHUP). `state` holds what the
//! routes and sessions of one gateway share; a session takes from it only
//! the handles it uses. `metrics` holds the Prometheus series, one registry
//! per gateway. `shutdown` turns SIGINT/SIGTERM into the drain. `console`
//! serves the built-in web console, one self-contained page that speaks the
//! same protocol.
//!
//! Dependencies point down, never back: `server` imports `http` and
//! `state`; `http` imports `console`, `session` and `state`; `console` and
//! `session` import `state`, which imports `hub`, which imports `broker`.
//! `config`, `protocol` and `metrics` sit below them. Nothing imports
//! `server`.
//!
//! # API
//!
//! The modules are private; what `main.rs` and the integration tests use is
//! re-exported here: [`Gateway`] and its [`Publisher`], the config
//! ([`load_config`], [`Config`], [`RawConfig`]) and its reload watcher
//! ([`Reloader`], [`watch_config`]). [`hot_paths`] opens the hot paths to
//! the micro-benchmarks and fuzz targets.

mod acl;
mod auth;
mod broker;
mod config;
mod console;
mod http;
mod hub;
mod issues;
mod metrics;
mod protocol;
mod server;
mod session;
mod shutdown;
mod state;
mod sync;

pub use auth::{Mode as AuthMode, now as unix_now};
pub use broker::BrokerError;
pub use broker::cluster::key_slot;
pub use config::watch::{
    Outcome as ReloadOutcome, Reloader, Watcher as ConfigWatcher, spawn as watch_config,
};
pub use config::{
    Config, ConfigError, LogFormat, RawApi, RawBroker, RawConfig, RawHistory, RawLimits, RawRedis,
    RawServer, load as load_config, resolve_path as resolve_config_path,
};
pub use metrics::Metrics;
pub use server::{Gateway, Publisher};
pub use shutdown::signal as shutdown_signal;

/// The hot paths, for the micro-benchmarks in `benches/` and the fuzz
/// targets in `fuzz/`; not an API to build on.
#[doc(hidden)]
pub mod hot_paths {
    pub use crate::acl::{Acl, RawAcl, RawRule};
    pub use crate::auth::Identity;
    pub use crate::broker::memory::MemoryBroker;
    pub use crate::broker::{Deliver, Delivery};
    pub use crate::hub::{ClientHandle, Hub, Join, Outbound, Registry, SendQueue};
    pub use crate::protocol::{Frame, decode, encode_delivery, validate_topic};
    pub use crate::session::Writer;
}

/// The broker seam, for the brokers' integration tests
/// (`tests/history_broker.rs`); not an API to build on.
#[doc(hidden)]
pub mod broker_seam {
    pub use crate::broker::{
        Broker, Deliver, Delivery, HistorySettings, HistoryStatus, Position, Range, start,
    };
}
