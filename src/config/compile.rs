//! The second stage: [`RawConfig::compile`] validates every key, collecting
//! each problem with its key path, and builds the [`Config`] the gateway runs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::load::toml_issue;
use super::mask::mask_url_password;
use super::{
    BrokerKind, Config, ConfigError, History, Issue, Limits, LogFormat, MAX_HISTORY_SIZE,
    MAX_HISTORY_TTL_SECS, RawConfig, Redis, Server,
};
use crate::acl::Acl;
use crate::auth::Authenticator;
use crate::issues::check_secs;

/// Upper bounds of duration keys (docs/CONFIG.md, "Bounds").
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// Bounds of `server.header_timeout_secs`: a request head needs at least a
/// second on a slow link, and an hour is already far beyond any client.
const HEADER_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=3600;
/// Upper bound of `server.write_delay_ms`: beyond a second, frames held
/// back would be mistaken for a stalled connection.
const MAX_WRITE_DELAY_MS: u64 = 1000;
/// Upper bound of `redis.health_check_secs`: a check rarer than an hour
/// would not notice a dead link in any useful time.
const MAX_HEALTH_CHECK_SECS: u64 = 3600;

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
        let history = self.compile_history(&mut issues);
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
                history,
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
        check_secs(
            issues,
            "server.idle_timeout_secs",
            s.idle_timeout_secs,
            1,
            DAY,
        );
        check_secs(
            issues,
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs,
            0,
            HOUR,
        );
        if !HEADER_TIMEOUT_SECS.contains(&s.header_timeout_secs) {
            issues.push(Issue::new(
                "server.header_timeout_secs",
                format!(
                    "{} is out of range; expected {} to {}",
                    s.header_timeout_secs,
                    HEADER_TIMEOUT_SECS.start(),
                    HEADER_TIMEOUT_SECS.end()
                ),
            ));
        }
        if s.write_delay_ms > MAX_WRITE_DELAY_MS {
            issues.push(Issue::new(
                "server.write_delay_ms",
                format!(
                    "{} is too large: at most {MAX_WRITE_DELAY_MS} milliseconds",
                    s.write_delay_ms
                ),
            ));
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
            header_timeout: Duration::from_secs(s.header_timeout_secs),
            write_delay: Duration::from_millis(s.write_delay_ms),
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
        let before = issues.len();
        check_secs(
            issues,
            "redis.reconnect_max_secs",
            r.reconnect_max_secs,
            1,
            HOUR,
        );
        ok &= issues.len() == before;
        if !(1..=MAX_HEALTH_CHECK_SECS).contains(&r.health_check_secs) {
            issues.push(Issue::new(
                "redis.health_check_secs",
                format!("must be between 1 and {MAX_HEALTH_CHECK_SECS}"),
            ));
            ok = false;
        }
        ok.then(|| Redis {
            url: r.url.clone(),
            password: (!r.password.is_empty()).then(|| r.password.clone()),
            pool_size: r.pool_size,
            channel_prefix: r.channel_prefix.clone(),
            reconnect_max: Duration::from_secs(r.reconnect_max_secs),
            health_check: Duration::from_secs(r.health_check_secs),
            nodes: r.nodes.clone(),
        })
    }

    fn compile_limits(&self, issues: &mut Vec<Issue>) -> Limits {
        let l = &self.limits;
        let positive = [
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_subscriptions", l.max_subscriptions),
            ("limits.send_queue", l.send_queue),
            ("limits.send_queue_bytes", l.send_queue_bytes),
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
            send_queue_bytes: l.send_queue_bytes,
            max_connections: l.max_connections,
            requests_per_sec: l.requests_per_sec,
            request_burst: l.request_burst,
        }
    }

    fn compile_history(&self, issues: &mut Vec<Issue>) -> History {
        let h = &self.history;
        if h.size > MAX_HISTORY_SIZE {
            issues.push(Issue::new(
                "history.size",
                format!("must be at most {MAX_HISTORY_SIZE} (0 turns history off)"),
            ));
        }
        if !(1..=MAX_HISTORY_TTL_SECS).contains(&h.ttl_secs) {
            issues.push(Issue::new(
                "history.ttl_secs",
                format!("must be 1 to {MAX_HISTORY_TTL_SECS}"),
            ));
        }
        History {
            size: h.size,
            ttl: Duration::from_secs(h.ttl_secs),
        }
    }

    /// A stable hash of the effective config with its secrets masked, as
    /// `topicgate check` prints it: it tells which version a replica runs
    /// and is shown by `/readyz`, so nothing derived from the JWT secret,
    /// the API key or a Redis password may enter it (an offline guess of a
    /// weak secret could be checked against it).
    fn fingerprint(&self) -> String {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        self.to_masked_toml().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
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
