//! Topic ACL: ordered glob rules, the first match decides (SPEC §2 `[acl]`).
//!
//! [`Acl::compile`] validates the rules and compiles every pattern once per
//! config: plain globs with globset, `${claim}` templates into a
//! `program::Program` that leaves the claims open (`tokens` reads a
//! template exactly as globset reads the filled glob). [`Acl::bind`] turns
//! the rules into a [`Policy`] for one identity at authorization: rules
//! whose `claims` conditions fail are dropped, and the claims the templates
//! name are looked up, nothing compiled. A value then matches only itself,
//! as the escaped, braced literal a filled glob would hold (see `literal`),
//! so that no value can widen a rule. [`Policy::check`] is a pure lookup per
//! subscribe.
//!
//! Every glob is parsed with the same options on every platform: `*` also
//! matches `.` and `/`, `\` escapes the next character (SPEC §2), and `{,x}`
//! keeps its empty alternative.

use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::issues::Issue;

mod program;
mod template;
mod tokens;

use program::Scratch;
use template::{Template, Templated, compile_templated};

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

/// A rule's topic patterns, compiled at config load as far as they can be.
#[derive(Debug)]
enum Patterns {
    /// No `${claim}`: the same globs for everyone.
    Static(Arc<Globs>),
    /// With `${claim}`s: compiled once, the values supplied per identity.
    Templated(Arc<Templated>),
    /// Filled and compiled per identity, as before templates were compiled
    /// once: the fallback for a rule with a template whose reading by
    /// `tokens::parse` does not reproduce globset's regex (none known; see
    /// `Acl::compile`).
    PerIdentity(Vec<Template>),
}

/// What one rule matches for one identity; any one pattern matching
/// suffices. Plain globs are matched each by its own regex rather than
/// through a `GlobSet`: the set's shortcuts read a path's file name and miss
/// topics ending in `/..` (the set says `**..` does not match `a/..`), and a
/// topic is not a path.
#[derive(Debug)]
enum Globs {
    Compiled(Vec<GlobMatcher>),
    /// A templated rule bound to one identity: shared compiled parts and
    /// the identity's claim values, which are all the identity adds.
    Bound {
        rule: Arc<Templated>,
        /// The identity's value of each of `Acl::template_claims`.
        values: Arc<[Option<Box<str>>]>,
    },
}

impl Globs {
    fn is_match(&self, topic: &str, scratch: &mut Option<Scratch>) -> bool {
        match self {
            Globs::Compiled(globs) => globs.iter().any(|glob| glob.is_match(topic)),
            Globs::Bound { rule, values } => {
                rule.globs.iter().any(|glob| glob.is_match(topic))
                    || rule.programs.iter().any(|program| {
                        program.is_match(values, topic, scratch.get_or_insert_default())
                    })
            }
        }
    }
}

/// A claim a rule names: `role`, or `org.role` for a nested one.
#[derive(Debug, Clone)]
struct ClaimPath {
    /// As written: tried first as one top-level key, so that namespaced
    /// claims such as `https://example.com/roles` can be named too.
    name: String,
    /// `name` split at dots, to walk nested objects (SPEC §2).
    segments: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    /// What topics the rule covers once its claims hold.
    patterns: Patterns,
    /// `(claim, expected value)`; all must hold for the rule to apply.
    claims: Vec<(ClaimPath, Value)>,
    /// What a match decides.
    effect: Effect,
}

/// Compiled `[acl]`.
#[derive(Debug)]
pub struct Acl {
    /// The decision when no rule matches.
    default: Effect,
    /// In file order, which is the order of precedence.
    rules: Vec<Rule>,
    /// Every claim a compiled template names, once: `bind` looks each up
    /// once however many rules use it.
    template_claims: Vec<ClaimPath>,
}

/// The ACL as it applies to one identity: the rules whose claims hold,
/// templates bound to the identity's claim values.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The decision when no rule matches.
    default: Effect,
    /// `(rule index, its globs, its effect)` for the rules that apply; the
    /// index is the rule's position in the file, for logs and details.
    rules: Vec<(usize, Arc<Globs>, Effect)>,
}

impl Acl {
    pub fn compile(raw: &RawAcl) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let default = parse_effect(&raw.default, "acl.default", &mut issues);
        let mut rules = Vec::new();
        let mut template_claims = Vec::new();
        for (index, rule) in raw.rules.iter().enumerate() {
            let key = format!("acl.rules[{index}]");
            let effect = parse_effect(&rule.effect, &format!("{key}.effect"), &mut issues);
            if rule.topics.is_empty() {
                issues.push(Issue::new(
                    format!("{key}.topics"),
                    "must list at least one glob",
                ));
            }
            let claims = compile_claims(&rule.claims, &key, &mut issues);
            let issues_before = issues.len();
            let mut templates = Vec::new();
            for (i, pattern) in rule.topics.iter().enumerate() {
                let pkey = format!("{key}.topics[{i}]");
                match Template::parse(pattern) {
                    Ok(template) => {
                        // A filled claim is a braced literal whatever its
                        // value (see `literal`), so one stand-in proves the
                        // glob valid for every identity.
                        if let Err(err) = glob(&template.fill(&|_| Some("x".into()))) {
                            issues.push(Issue::new(
                                pkey,
                                format!("bad glob {pattern:?}: {}", err.kind()),
                            ));
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
                match build_globs(templates.iter().map(|t| t.fill(&|_| None))) {
                    Ok(globs) => Patterns::Static(Arc::new(Globs::Compiled(globs))),
                    Err(err) => {
                        issues.push(Issue::new(format!("{key}.topics"), err.to_string()));
                        continue;
                    }
                }
            } else {
                let known = template_claims.len();
                match compile_templated(&templates, &mut template_claims) {
                    Some(templated) => Patterns::Templated(Arc::new(templated)),
                    None => {
                        template_claims.truncate(known);
                        Patterns::PerIdentity(templates)
                    }
                }
            };
            rules.push(Rule {
                patterns,
                claims,
                effect,
            });
        }
        if issues.is_empty() {
            Ok(Self {
                default,
                rules,
                template_claims,
            })
        } else {
            Err(issues)
        }
    }

    /// The rules as they apply to `identity`: the claims each template
    /// names are looked up, and nothing is compiled (but for the fallback
    /// of `Patterns::PerIdentity`).
    pub fn bind(&self, identity: &Identity) -> Policy {
        let mut rules = Vec::with_capacity(self.rules.len());
        let mut values: Option<Arc<[Option<Box<str>>]>> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            let claims_hold = rule
                .claims
                .iter()
                .all(|(path, expected)| claim_matches(path.lookup(&identity.claims), expected));
            if !claims_hold {
                continue;
            }
            let globs = match &rule.patterns {
                Patterns::Static(globs) => globs.clone(),
                Patterns::Templated(templated) => {
                    let values = values.get_or_insert_with(|| {
                        self.template_claims
                            .iter()
                            .map(|path| {
                                let value = path.lookup(&identity.claims).and_then(scalar_text);
                                value.map(String::into_boxed_str)
                            })
                            .collect()
                    });
                    // A rule naming a claim the token lacks does not match.
                    let missing = |&n: &usize| values.get(n).is_none_or(Option::is_none);
                    if templated.claims.iter().any(missing) {
                        continue;
                    }
                    Arc::new(Globs::Bound {
                        rule: templated.clone(),
                        values: values.clone(),
                    })
                }
                Patterns::PerIdentity(templates) => {
                    let value =
                        |path: &ClaimPath| path.lookup(&identity.claims).and_then(scalar_text);
                    let filled: Option<Vec<String>> =
                        templates.iter().map(|t| t.try_fill(&value)).collect();
                    // A rule naming a claim the token lacks does not match.
                    let Some(filled) = filled else { continue };
                    match build_globs(filled) {
                        Ok(globs) => Arc::new(Globs::Compiled(globs)),
                        // Unreachable: `compile` proved every filling valid.
                        // Should it happen, a deny rule that cannot be built
                        // denies everything from here on rather than vanish.
                        Err(_) if rule.effect == Effect::Deny => {
                            return Policy {
                                default: Effect::Deny,
                                rules,
                            };
                        }
                        Err(_) => continue,
                    }
                }
            };
            rules.push((index, globs, rule.effect));
        }
        Policy {
            default: self.default,
            rules,
        }
    }
}

impl Policy {
    pub fn check(&self, topic: &str) -> Decision {
        let mut scratch = None;
        for (index, globs, effect) in &self.rules {
            if globs.is_match(topic, &mut scratch) {
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

impl ClaimPath {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            segments: name.split('.').map(str::to_string).collect(),
        }
    }

    fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
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

fn compile_claims(
    raw: &Map<String, Value>,
    key: &str,
    issues: &mut Vec<Issue>,
) -> Vec<(ClaimPath, Value)> {
    let mut claims = Vec::new();
    for (name, expected) in raw {
        let ckey = format!("{key}.claims.{name}");
        if name.is_empty() {
            issues.push(Issue::new(ckey, "claim name is empty"));
        } else if !matches!(
            expected,
            Value::String(_) | Value::Number(_) | Value::Bool(_)
        ) {
            issues.push(Issue::new(
                ckey,
                "expected a string, number or boolean (name a nested claim with a dotted key, \
                 e.g. \"org.role\")",
            ));
        } else {
            claims.push((ClaimPath::new(name), expected.clone()));
        }
    }
    claims
}

/// The one place globs are parsed, so that templates, static rules and the
/// compile-time check agree: `*` crosses `.` and `/`, `\` escapes on every
/// platform (globset turns escapes off on Windows by default), and an empty
/// alternative is kept, so `{,x}` means "nothing or x" and an empty claim
/// value in `{a,${sub}}` stands for itself.
fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
}

fn build_globs(
    patterns: impl IntoIterator<Item = String>,
) -> Result<Vec<GlobMatcher>, globset::Error> {
    patterns
        .into_iter()
        .map(|pattern| glob(&pattern).map(|glob| glob.compile_matcher()))
        .collect()
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

/// Equal, or contained when the claim is an array (SPEC §2).
fn claim_matches(claim: Option<&Value>, expected: &Value) -> bool {
    match claim {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| same_scalar(item, expected)),
        Some(value) => same_scalar(value, expected),
    }
}

/// Equality where numbers compare by value: TOML's `level = 1` must match a
/// token's `1.0`. Strings never equal numbers or booleans.
fn same_scalar(claim: &Value, expected: &Value) -> bool {
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
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim value as glob text matching exactly that value wherever a
/// template puts it (outside a class, which `Template::parse` refuses).
/// Braces isolate it: globset decides whether `**` is recursive by looking
/// at the raw character beside it, so an escaped `,` or `/` from a value
/// right next to a template's `**` would otherwise change its meaning.
fn literal(value: &str) -> String {
    format!("{{{}}}", escape(value))
}

/// Makes every glob meta-character of a claim value literal with globset's
/// backslash escape: `* ? [ ] { }`, `\` itself, and `,`, which inside a
/// `{a,b}` alternation would otherwise split an alternative.
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

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod tests;
