//! Topic ACL: ordered glob rules, the first match decides (SPEC §2 `[acl]`).
//!
//! [`Acl::compile`] validates the rules and compiles the globs of every rule
//! without a `${claim}` template, once per config. [`Acl::bind`] turns the
//! rules into a [`Policy`] for one identity at authorization: rules whose
//! `claims` conditions fail are dropped, templates are filled with the
//! identity's claim values, glob-escaped so that no value can widen a rule,
//! and compiled. [`Policy::check`] is then a pure lookup per subscribe.

use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::config::Issue;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAcl {
    pub default: String,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub topics: Vec<String>,
    #[serde(default)]
    pub claims: Map<String, Value>,
    pub effect: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The outcome of a check, with the rule that decided (for logs and details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by rule `n` (0-based), or by the default when `None`.
    Allow(Option<usize>),
    /// Denied by rule `n` (0-based), or by the default when `None`.
    Deny(Option<usize>),
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// A rule's topic patterns: compiled now, or filled per identity.
#[derive(Debug)]
enum Patterns {
    Static(Arc<GlobSet>),
    Templated(Vec<Template>),
}

/// A pattern split into literal glob text and `${claim}` references.
#[derive(Debug)]
struct Template(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    Glob(String),
    /// A dotted claim path.
    Claim(Vec<String>),
}

#[derive(Debug)]
struct Rule {
    patterns: Patterns,
    /// `(dotted path, expected value)`; all must hold.
    claims: Vec<(Vec<String>, Value)>,
    effect: Effect,
}

/// Compiled `[acl]`.
#[derive(Debug)]
pub struct Acl {
    default: Effect,
    rules: Vec<Rule>,
}

/// The ACL as it applies to one identity: only plain globs remain.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Effect,
    /// `(rule index, its globs, its effect)` for the rules that apply.
    rules: Vec<(usize, Arc<GlobSet>, Effect)>,
}

impl Acl {
    pub fn compile(raw: &RawAcl) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let default = parse_effect(&raw.default, "acl.default", &mut issues);
        let mut rules = Vec::new();
        for (index, rule) in raw.rules.iter().enumerate() {
            let key = format!("acl.rules[{index}]");
            let effect = parse_effect(&rule.effect, &format!("{key}.effect"), &mut issues);
            if rule.topics.is_empty() {
                issues.push(Issue::new(format!("{key}.topics"), "must list at least one glob"));
            }
            let claims = rule
                .claims
                .iter()
                .map(|(path, value)| (split_path(path), value.clone()))
                .collect();
            let issues_before = issues.len();
            let mut templates = Vec::new();
            for (i, pattern) in rule.topics.iter().enumerate() {
                let pkey = format!("{key}.topics[{i}]");
                match Template::parse(pattern) {
                    Ok(template) => {
                        // Validate the glob syntax with a harmless stand-in value.
                        if let Err(err) = Glob::new(&template.fill(&|_| Some("x".into()))) {
                            issues.push(Issue::new(pkey, format!("bad glob {pattern:?}: {err}")));
                        }
                        templates.push(template);
                    }
                    Err(reason) => issues.push(Issue::new(pkey, reason)),
                }
            }
            if issues.len() > issues_before {
                continue;
            }
            let patterns = if templates.iter().all(Template::is_static) {
                match build_set(templates.iter().map(|t| t.fill(&|_| None))) {
                    Ok(set) => Patterns::Static(Arc::new(set)),
                    Err(err) => {
                        issues.push(Issue::new(format!("{key}.topics"), err.to_string()));
                        continue;
                    }
                }
            } else {
                Patterns::Templated(templates)
            };
            rules.push(Rule {
                patterns,
                claims,
                effect,
            });
        }
        if issues.is_empty() {
            Ok(Self { default, rules })
        } else {
            Err(issues)
        }
    }

    /// The rules as they apply to `identity`, templates filled and compiled.
    pub fn bind(&self, identity: &Identity) -> Policy {
        let mut rules = Vec::with_capacity(self.rules.len());
        for (index, rule) in self.rules.iter().enumerate() {
            let claims_hold = rule
                .claims
                .iter()
                .all(|(path, expected)| claim_matches(lookup(&identity.claims, path), expected));
            if !claims_hold {
                continue;
            }
            let set = match &rule.patterns {
                Patterns::Static(set) => set.clone(),
                Patterns::Templated(templates) => {
                    let value = |path: &[String]| {
                        lookup(&identity.claims, path)
                            .and_then(scalar_text)
                            .map(|v| escape(&v))
                    };
                    let filled: Option<Vec<String>> =
                        templates.iter().map(|t| t.try_fill(&value)).collect();
                    // A rule naming a claim the token lacks does not match.
                    let Some(filled) = filled else { continue };
                    match build_set(filled) {
                        Ok(set) => Arc::new(set),
                        Err(_) => continue,
                    }
                }
            };
            rules.push((index, set, rule.effect));
        }
        Policy {
            default: self.default,
            rules,
        }
    }
}

impl Policy {
    pub fn check(&self, topic: &str) -> Decision {
        for (index, set, effect) in &self.rules {
            if set.is_match(topic) {
                return decide(*effect, Some(*index));
            }
        }
        decide(self.default, None)
    }
}

fn decide(effect: Effect, rule: Option<usize>) -> Decision {
    match effect {
        Effect::Allow => Decision::Allow(rule),
        Effect::Deny => Decision::Deny(rule),
    }
}

impl Template {
    fn parse(pattern: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = pattern;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Glob(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {pattern:?}"))?;
            let name = &after[..end];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(format!("bad claim name {name:?} in {pattern:?}"));
            }
            pieces.push(Piece::Claim(split_path(name)));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Glob(rest.to_string()));
        }
        Ok(Self(pieces))
    }

    fn is_static(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Piece::Glob(_)))
    }

    /// Fills claims with `value`; a missing claim becomes an empty string.
    fn fill(&self, value: &dyn Fn(&[String]) -> Option<String>) -> String {
        self.try_fill(&|path| Some(value(path).unwrap_or_default()))
            .unwrap_or_default()
    }

    /// Fills claims with `value`; `None` when a claim is missing.
    fn try_fill(&self, value: &dyn Fn(&[String]) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Glob(text) => out.push_str(text),
                Piece::Claim(path) => out.push_str(&value(path)?),
            }
        }
        Some(out)
    }
}

fn build_set(patterns: impl IntoIterator<Item = String>) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(&pattern)?);
    }
    builder.build()
}

fn parse_effect(text: &str, key: &str, issues: &mut Vec<Issue>) -> Effect {
    match text {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => {
            issues.push(Issue::new(
                key,
                format!("unknown effect {other:?}; expected \"allow\" or \"deny\""),
            ));
            Effect::Deny
        }
    }
}

fn split_path(path: &str) -> Vec<String> {
    path.split('.').map(str::to_string).collect()
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}

/// Equal, or contained when the claim is an array (SPEC §2).
fn claim_matches(claim: Option<&Value>, expected: &Value) -> bool {
    match claim {
        None => false,
        Some(Value::Array(items)) if !expected.is_array() => items.contains(expected),
        Some(value) => value == expected,
    }
}

/// The text a claim substitutes as; arrays and objects do not substitute.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Makes every glob meta-character of a claim value literal with globset's
/// backslash escape. `,` is escaped too: inside `{a,b}` it would otherwise
/// split an alternative.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
