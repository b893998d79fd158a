//! Claims as rules name and compare them (docs/CONFIG.md, `[acl]`).

use serde_json::{Map, Value};

/// A claim a rule names: `role`, or `org.role` for a nested one.
#[derive(Debug, Clone)]
pub(super) struct ClaimPath {
    /// As written: tried first as one top-level key, so that namespaced
    /// claims such as `https://example.com/roles` can be named too.
    pub(super) name: String,
    /// `name` split at dots, to walk nested objects (docs/CONFIG.md).
    segments: Vec<String>,
}

impl ClaimPath {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            segments: name.split('.').map(str::to_string).collect(),
        }
    }

    pub(super) fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = claims.get(&self.name) {
            return Some(value);
        }
        let (first, rest) = self.segments.split_first()?;
        let mut value = claims.get(first)?;
        for key in rest {
            value = value.as_object()?.get(key)?;
        }
        Some(value)
    }
}

/// Equal, or contained when the claim is an array (docs/CONFIG.md).
pub(super) fn claim_matches(claim: Option<&Value>, expected: &Value) -> bool {
    match claim {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| same_scalar(item, expected)),
        Some(value) => same_scalar(value, expected),
    }
}

/// Equality where numbers compare by value: TOML's `level = 1` must match a
/// token's `1.0`. Strings never equal numbers or booleans.
pub(super) fn same_scalar(claim: &Value, expected: &Value) -> bool {
    match (claim, expected) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i128(), b.as_i128()) {
            (Some(a), Some(b)) => a == b,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

/// The text a claim substitutes as; arrays, objects and null do not
/// substitute, so a rule naming them does not match.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
