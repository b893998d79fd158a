//! `[auth]` and `[auth.jwt]` as written in the file, before validation
//! (every key: docs/CONFIG.md).

use serde::{Deserialize, Serialize};

/// `[auth]` as written in the file, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// `"jwt"` or `"bypass"`; anything else is a config error.
    pub mode: String,
    /// Seconds a jwt-mode connection may stay unauthenticated
    /// (docs/PROTOCOL.md, "Closing").
    pub timeout_secs: u64,
    /// `[auth.jwt]`: how tokens are verified.
    pub jwt: RawJwt,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            mode: "jwt".into(),
            timeout_secs: 30,
            jwt: RawJwt::default(),
        }
    }
}

/// `[auth.jwt]` as written in the file, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJwt {
    /// Algorithm names a token's header may carry; see [`SUPPORTED`](super::SUPPORTED).
    pub algorithms: Vec<String>,
    /// HS* secret given inline (handy with `TOPICGATE__AUTH__JWT__SECRET`).
    pub secret: String,
    /// HS* secret read from a file (Kubernetes secrets), trimmed of whitespace.
    pub secret_file: String,
    /// PEM public key for the one allowed RS*, ES* or EdDSA family.
    pub public_key_file: String,
    /// Required `iss` when non-empty.
    pub issuer: String,
    /// Required `aud` (or one of an `aud` array) when non-empty.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into()],
            secret: String::new(),
            secret_file: String::new(),
            public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 5,
        }
    }
}
