//! `[acl]` as written in the file, before validation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `[acl]` as written in the file, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAcl {
    /// `"allow"` or `"deny"`: the decision when no rule matches.
    pub default: String,
    /// `[[acl.rules]]` in order; the first that matches decides.
    pub rules: Vec<RawRule>,
}

impl Default for RawAcl {
    fn default() -> Self {
        Self {
            default: "deny".into(),
            rules: Vec::new(),
        }
    }
}

/// One `[[acl.rules]]` entry, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Globs, possibly with `${claim}` templates; any one matching suffices.
    pub topics: Vec<String>,
    /// Claim name (dotted for nested) -> value the token must carry.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// `"allow"` or `"deny"`.
    pub effect: String,
}
