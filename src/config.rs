//! Configuration in two stages (every key: docs/CONFIG.md).
//!
//! [`RawConfig`] is what the TOML file and the `TOPICGATE__…` environment
//! deserialize into: every key has a default and unknown keys are errors.
//! [`RawConfig::compile`] validates the whole of it, collecting every problem
//! with its key path, and precompiles what the hot path needs (JWT keys, ACL
//! globs), so nothing is parsed per request. The result, [`Config`], is
//! immutable and shared as `Arc<Config>`; a reload builds a new one.
//!
//! `config` sits above the sections it compiles: `acl` and `auth` validate
//! their own tables and report [`Issue`]s from the `issues` module below
//! all three, so neither of them imports `config`.

mod compile;
mod load;
mod mask;
mod raw;
pub mod watch;

#[cfg(test)]
use load::resolve_path_from;
pub use load::{load, resolve_path};
#[cfg(test)]
use mask::mask_url_password;
pub use raw::{RawApi, RawBroker, RawConfig, RawHistory, RawLimits, RawRedis, RawServer};

pub use crate::issues::{ConfigError, Issue};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::acl::Acl;
use crate::auth::Authenticator;

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "TOPICGATE_CONFIG";
/// Default config file path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/config.toml";
/// Prefix of environment overrides: `TOPICGATE__REDIS__URL` sets `redis.url`.
pub const ENV_PREFIX: &str = "TOPICGATE__";

/// Which broker engine carries messages between replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    RedisCluster,
    Memory,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct Server {
    pub bind: SocketAddr,
    /// Exact Origin values accepted at upgrade; empty accepts any.
    pub allowed_origins: Vec<String>,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Longest wait for an HTTP request head, and longest idle time of a
    /// keep-alive connection between requests.
    pub header_timeout: Duration,
    /// Least time between two writes to one connection (write coalescing);
    /// zero writes every frame at once.
    pub write_delay: Duration,
    pub console: bool,
    pub log_format: LogFormat,
}

/// `[redis]`, validated. Compared whole on reload to decide a reconnect.
#[derive(Debug, Clone, PartialEq)]
pub struct Redis {
    /// Connection target with `redis.password` already applied.
    pub url: String,
    pub password: Option<String>,
    pub pool_size: usize,
    /// Topic T travels as Redis channel `prefix + T`.
    pub channel_prefix: String,
    pub reconnect_max: Duration,
    /// How often each Redis link is pinged, and how long a ping may take
    /// before the link counts as dead.
    pub health_check: Duration,
    pub nodes: Vec<String>,
}

/// `[limits]`, validated.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub send_queue: usize,
    /// Bytes of frames buffered per client before slow_consumer.
    pub send_queue_bytes: usize,
    pub max_connections: usize,
    pub requests_per_sec: u32,
    pub request_burst: u32,
}

/// `[history]`, validated: what the broker records per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Messages kept per topic; 0 turns history off.
    pub size: usize,
    /// How long a topic's history outlives its last recorded publish.
    pub ttl: Duration,
}

/// Largest `history.size`: a stream this long per topic is already more
/// than a recovery should replay.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;
/// Longest `history.ttl_secs`: 30 days.
pub const MAX_HISTORY_TTL_SECS: u64 = 30 * 24 * 3600;

/// A validated, compiled configuration. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    pub server: Server,
    /// Token verification and the bypass switch, keys already parsed.
    pub auth: Authenticator,
    pub broker: BrokerKind,
    /// Bearer key of `POST /publish`; `None` disables the endpoint.
    pub api_key: Option<String>,
    pub redis: Redis,
    pub limits: Limits,
    pub history: History,
    /// ACL rules with their globs compiled.
    pub acl: Acl,
    /// The raw form this was compiled from, for `check` and reload diffs.
    pub raw: RawConfig,
    /// Fingerprint of the effective config (hex), so operators can tell
    /// which version each replica runs (`/readyz`).
    pub hash: String,
    /// When this config was compiled, in seconds since the epoch.
    pub loaded_at: u64,
}

impl Config {
    /// Valid but risky settings, each with its key: logged at start and on
    /// every reload, printed by `topicgate check`.
    pub fn warnings(&self) -> &[Issue] {
        self.acl.warnings()
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut raw = RawConfig::default();
        raw.auth.jwt.secret = "built-in-default-secret".into();
        match raw.compile(Path::new(".")) {
            Ok(config) => config,
            Err(err) => unreachable!("built-in defaults must compile: {err}"),
        }
    }
}

#[cfg(test)]
mod tests;
