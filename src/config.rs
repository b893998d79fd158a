//! Configuration in two stages (SPEC §2).
//!
//! [`RawConfig`] is what the TOML file and the `TOPICGATE__…` environment
//! deserialize into: every key has a default and unknown keys are errors.
//! [`RawConfig::compile`] validates the whole of it, collecting every problem
//! with its key path, and precompiles what the hot path needs (JWT keys, ACL
//! globs), so nothing is parsed per request. The result, [`Config`], is
//! immutable and shared as `Arc<Config>`; a reload builds a new one.

mod load;
mod raw;
pub mod watch;

#[cfg(test)]
use load::resolve_path_from;
use load::toml_issue;
pub use load::{load, resolve_path};
pub use raw::{RawApi, RawBroker, RawConfig, RawLimits, RawRedis, RawServer};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::acl::Acl;
use crate::auth::Authenticator;

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "TOPICGATE_CONFIG";
/// Default config file path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/config.toml";
/// Prefix of environment overrides: `TOPICGATE__REDIS__URL` sets `redis.url`.
pub const ENV_PREFIX: &str = "TOPICGATE__";

/// One problem found in a config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `auth.jwt.secret`; `(file)` for whole-file errors.
    pub key: String,
    /// Why the value is not acceptable.
    pub reason: String,
}

impl Issue {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem of a rejected config, reported at once.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file the config was read from, when there was one.
    pub file: Option<PathBuf>,
    /// All problems found; never empty.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "invalid config {}:", file.display())?,
            None => write!(f, "invalid config:")?,
        }
        for issue in &self.issues {
            write!(f, "\n  {}: {}", issue.key, issue.reason)?;
        }
        Ok(())
    }
}

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
    pub nodes: Vec<String>,
}

/// `[limits]`, validated.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub send_queue: usize,
    pub max_connections: usize,
    pub requests_per_sec: u32,
    pub request_burst: u32,
}

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

impl RawConfig {
    /// Parses TOML text with no environment overrides (tests, examples).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError {
            file: None,
            issues: vec![toml_issue(&err, text)],
        })
    }

    /// Validates every key and compiles keys and globs. Relative file paths
    /// (`secret_file`, `public_key_file`) are resolved against `base_dir`.
    pub fn compile(&self, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut issues = Vec::new();
        let server = self.compile_server(&mut issues);
        let broker = match self.broker.kind.as_str() {
            "redis" => BrokerKind::Redis,
            "redis-cluster" => BrokerKind::RedisCluster,
            "memory" => BrokerKind::Memory,
            other => {
                issues.push(Issue::new(
                    "broker.kind",
                    format!("unknown broker {other:?}; expected \"redis\", \"redis-cluster\" or \"memory\""),
                ));
                BrokerKind::Memory
            }
        };
        let redis = self.compile_redis(broker, &mut issues);
        let limits = self.compile_limits(&mut issues);
        let auth = Authenticator::compile(&self.auth, base_dir).map_err(|mut found| {
            issues.append(&mut found);
        });
        let acl = Acl::compile(&self.acl).map_err(|mut found| issues.append(&mut found));
        match (server, redis, auth, acl) {
            (Some(server), Some(redis), Ok(auth), Ok(acl)) if issues.is_empty() => Ok(Config {
                server,
                auth,
                broker,
                api_key: (!self.api.key.is_empty()).then(|| self.api.key.clone()),
                redis,
                limits,
                acl,
                raw: self.clone(),
                hash: self.fingerprint(),
                loaded_at: crate::auth::now(),
            }),
            _ => Err(ConfigError { file: None, issues }),
        }
    }

    fn compile_server(&self, issues: &mut Vec<Issue>) -> Option<Server> {
        let s = &self.server;
        let bind = s
            .bind
            .parse::<SocketAddr>()
            .map_err(|err| {
                issues.push(Issue::new(
                    "server.bind",
                    format!("{:?} is not an address like 0.0.0.0:3000 ({err})", s.bind),
                ))
            })
            .ok();
        if s.idle_timeout_secs == 0 {
            issues.push(Issue::new("server.idle_timeout_secs", "must be at least 1"));
        }
        let log_format = match s.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                issues.push(Issue::new(
                    "server.log_format",
                    format!("unknown format {other:?}; expected \"text\" or \"json\""),
                ));
                LogFormat::Text
            }
        };
        Some(Server {
            bind: bind?,
            allowed_origins: s.allowed_origins.clone(),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
            console: s.console,
            log_format,
        })
    }

    fn compile_redis(&self, broker: BrokerKind, issues: &mut Vec<Issue>) -> Option<Redis> {
        let r = &self.redis;
        let mut ok = true;
        match broker {
            BrokerKind::Redis => {
                if let Err(err) = redis::Client::open(r.url.as_str()) {
                    issues.push(Issue::new(
                        "redis.url",
                        format!("not a usable redis:// or rediss:// URL: {err}"),
                    ));
                    ok = false;
                }
            }
            BrokerKind::RedisCluster => ok &= check_cluster_nodes(&r.nodes, issues),
            BrokerKind::Memory => {}
        }
        if r.pool_size == 0 {
            issues.push(Issue::new("redis.pool_size", "must be at least 1"));
            ok = false;
        }
        if r.reconnect_max_secs == 0 {
            issues.push(Issue::new("redis.reconnect_max_secs", "must be at least 1"));
            ok = false;
        }
        ok.then(|| Redis {
            url: r.url.clone(),
            password: (!r.password.is_empty()).then(|| r.password.clone()),
            pool_size: r.pool_size,
            channel_prefix: r.channel_prefix.clone(),
            reconnect_max: Duration::from_secs(r.reconnect_max_secs),
            nodes: r.nodes.clone(),
        })
    }

    fn compile_limits(&self, issues: &mut Vec<Issue>) -> Limits {
        let l = &self.limits;
        let positive = [
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_subscriptions", l.max_subscriptions),
            ("limits.send_queue", l.send_queue),
            ("limits.max_connections", l.max_connections),
            ("limits.requests_per_sec", l.requests_per_sec as usize),
            ("limits.request_burst", l.request_burst as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                issues.push(Issue::new(key, "must be at least 1"));
            }
        }
        if l.max_message_bytes > 0 && l.max_message_bytes < 256 {
            issues.push(Issue::new(
                "limits.max_message_bytes",
                "must be at least 256 so a request with a token fits",
            ));
        }
        Limits {
            max_message_bytes: l.max_message_bytes,
            max_subscriptions: l.max_subscriptions,
            send_queue: l.send_queue,
            max_connections: l.max_connections,
            requests_per_sec: l.requests_per_sec,
            request_burst: l.request_burst,
        }
    }

    /// A stable hash of the effective config, secrets included (so a
    /// rotated secret changes it) but never revealed by it.
    fn fingerprint(&self) -> String {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        toml::to_string(self).unwrap_or_default().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// The effective config as TOML with every secret replaced by `"***"`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for secret in [
            &mut masked.auth.jwt.secret,
            &mut masked.api.key,
            &mut masked.redis.password,
        ] {
            if !secret.is_empty() {
                *secret = "***".into();
            }
        }
        masked.redis.url = mask_url_password(&masked.redis.url);
        for node in &mut masked.redis.nodes {
            *node = mask_url_password(node);
        }
        match toml::to_string_pretty(&masked) {
            Ok(text) => text,
            Err(err) => format!("# could not render config: {err}\n"),
        }
    }
}

/// `redis.nodes` for `broker.kind = "redis-cluster"`: at least one seed, each
/// a usable URL, all with the same scheme (TLS is all or nothing).
fn check_cluster_nodes(nodes: &[String], issues: &mut Vec<Issue>) -> bool {
    if nodes.is_empty() {
        issues.push(Issue::new(
            "redis.nodes",
            "broker.kind = \"redis-cluster\" needs at least one seed node URL, e.g. [\"redis://10.0.0.1:7000\"]",
        ));
        return false;
    }
    let mut ok = true;
    for node in nodes {
        if let Err(err) = redis::Client::open(node.as_str()) {
            issues.push(Issue::new(
                "redis.nodes",
                format!(
                    "{:?} is not a usable redis:// or rediss:// URL: {err}",
                    mask_url_password(node)
                ),
            ));
            ok = false;
        }
    }
    let tls = |node: &String| node.starts_with("rediss://");
    if ok && nodes.iter().any(tls) && !nodes.iter().all(tls) {
        issues.push(Issue::new(
            "redis.nodes",
            "mixes redis:// and rediss:// seeds; a cluster is reached with TLS or without",
        ));
        ok = false;
    }
    ok
}

/// `redis://user:pass@host` -> `redis://user:***@host`. A userinfo without
/// `:` may be a bare password and is masked whole. The redis crate also reads
/// a password from the query of socket URLs (`unix:///s.sock?pass=x`), so
/// `pass` and `password` parameters are masked too.
fn mask_url_password(url: &str) -> String {
    let masked = mask_userinfo(url);
    let Some((head, query)) = masked.split_once('?') else {
        return masked;
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name == "pass" || name == "password" => format!("{name}=***"),
            _ => param.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

fn mask_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => format!("{}***{}", &url[..scheme_end], &rest[at..]),
    }
}

#[cfg(test)]
mod tests;
