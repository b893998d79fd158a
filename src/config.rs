//! Configuration in two stages (SPEC §2).
//!
//! [`RawConfig`] is what the TOML file and the `TOPICGATE__…` environment
//! deserialize into: every key has a default and unknown keys are errors.
//! [`RawConfig::compile`] validates the whole of it, collecting every problem
//! with its key path, and precompiles what the hot path needs (JWT keys, ACL
//! globs), so nothing is parsed per request. The result, [`Config`], is
//! immutable and shared as `Arc<Config>`; a reload builds a new one.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::acl::{Acl, RawAcl};
use crate::auth::{Authenticator, RawAuth};

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "TOPICGATE_CONFIG";
/// Default config file path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/config.toml";

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub auth: RawAuth,
    pub broker: RawBroker,
    pub api: RawApi,
    pub redis: RawRedis,
    pub limits: RawLimits,
    pub acl: RawAcl,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub bind: String,
    pub allowed_origins: Vec<String>,
    pub idle_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub console: bool,
    pub log_format: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:3000".into(),
            allowed_origins: Vec::new(),
            idle_timeout_secs: 60,
            shutdown_grace_secs: 10,
            console: false,
            log_format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBroker {
    pub kind: String,
}

impl Default for RawBroker {
    fn default() -> Self {
        Self {
            kind: "redis".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawApi {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRedis {
    pub url: String,
    pub password: String,
    pub pool_size: usize,
    pub channel_prefix: String,
    pub reconnect_max_secs: u64,
    pub nodes: Vec<String>,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            password: String::new(),
            pool_size: 8,
            channel_prefix: String::new(),
            reconnect_max_secs: 5,
            nodes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub send_queue: usize,
    pub max_connections: usize,
    pub requests_per_sec: u32,
    pub request_burst: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65536,
            max_subscriptions: 100,
            send_queue: 1024,
            max_connections: 100_000,
            requests_per_sec: 100,
            request_burst: 100,
        }
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
}

impl Default for Config {
    fn default() -> Self {
        let mut raw = RawConfig::default();
        raw.auth.jwt.secret = "change-me".into();
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
            issues: vec![toml_issue(&err)],
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
        if broker == BrokerKind::RedisCluster {
            issues.push(Issue::new(
                "broker.kind",
                "\"redis-cluster\" is not available in this build yet",
            ));
        }
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
        if broker == BrokerKind::Redis {
            if let Err(err) = redis::Client::open(r.url.as_str()) {
                issues.push(Issue::new(
                    "redis.url",
                    format!("not a redis:// or rediss:// URL: {err}"),
                ));
                ok = false;
            }
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
        match toml::to_string_pretty(&masked) {
            Ok(text) => text,
            Err(err) => format!("# could not render config: {err}\n"),
        }
    }
}

/// `redis://user:pass@host` -> `redis://user:***@host`.
fn mask_url_password(url: &str) -> String {
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

fn toml_issue(err: &toml::de::Error) -> Issue {
    Issue::new("(file)", err.message().to_string())
}

/// Where the config comes from: `--config` beats `TOPICGATE_CONFIG` beats the default.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    if let Some(path) = cli {
        return path.to_path_buf();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads `path` (which must exist) with `TOPICGATE__…` overrides from `env`
/// (the process environment when `None`), then compiles it.
pub fn load(
    path: &Path,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<Config, ConfigError> {
    let with_file = |issues: Vec<Issue>| ConfigError {
        file: Some(path.to_path_buf()),
        issues,
    };
    let raw = load_raw(path, env).map_err(|issue| with_file(vec![issue]))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    raw.compile(base_dir)
        .map_err(|err| with_file(err.issues))
}

fn load_raw(
    path: &Path,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<RawConfig, Issue> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Issue::new("(file)", format!("cannot read {}: {err}", path.display())))?;
    // Parse once with toml itself: its errors carry line and column.
    toml::from_str::<toml::Table>(&text).map_err(|err| toml_issue(&err))?;
    let environment = config::Environment::with_prefix("TOPICGATE")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("server.allowed_origins")
        .with_list_parse_key("auth.jwt.algorithms")
        .with_list_parse_key("redis.nodes")
        .source(env);
    let settings = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .map_err(|err| Issue::new("(file)", err.to_string()))?;
    settings
        .try_deserialize::<RawConfig>()
        .map_err(|err| config_issue(&err))
}

/// Turns the config crate's error into a key + reason where it names one.
fn config_issue(err: &config::ConfigError) -> Issue {
    let text = err.to_string();
    if let Some((reason, key)) = text.rsplit_once(" for key `") {
        return Issue::new(key.trim_end_matches('`'), reason);
    }
    Issue::new("(file)", text)
}

#[cfg(test)]
mod tests;
