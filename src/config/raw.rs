//! The config as written: what the TOML file and the `TOPICGATE__…`
//! environment deserialize into. Every key has a default; unknown keys are
//! errors. `RawConfig::compile` (in `compile.rs`) validates it.

use serde::{Deserialize, Serialize};

use crate::acl::RawAcl;
use crate::auth::RawAuth;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub auth: RawAuth,
    pub broker: RawBroker,
    pub api: RawApi,
    pub redis: RawRedis,
    pub limits: RawLimits,
    pub history: RawHistory,
    pub acl: RawAcl,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub bind: String,
    pub allowed_origins: Vec<String>,
    pub idle_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub header_timeout_secs: u64,
    pub write_delay_ms: u64,
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
            header_timeout_secs: 10,
            write_delay_ms: 0,
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
    pub health_check_secs: u64,
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
            health_check_secs: 5,
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
    pub send_queue_bytes: usize,
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
            send_queue_bytes: 1 << 20,
            max_connections: 100_000,
            requests_per_sec: 100,
            request_burst: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHistory {
    pub size: usize,
    pub ttl_secs: u64,
}

impl Default for RawHistory {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_secs: 300,
        }
    }
}
