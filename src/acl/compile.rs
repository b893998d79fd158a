//! Validating `[acl]`: every problem reported with its key, every pattern
//! compiled once per config.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::claims::ClaimPath;
use super::globs::{Globs, build_globs, glob};
use super::template::{Template, compile_templated};
use super::{Acl, Effect, Patterns, RawAcl, Rule};
use crate::issues::Issue;

impl Acl {
    /// Validates `[acl]`, reporting every problem with its key path.
    pub fn compile(raw: &RawAcl) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let default = parse_effect(&raw.default, "acl.default", &mut issues);
        let mut rules = Vec::new();
        let mut template_claims = Vec::new();
        let mut warnings = Vec::new();
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
                        if let (Some(claim), Effect::Allow) =
                            (template.claim_before_wildcard(), effect)
                        {
                            warnings.push(Issue::new(
                                pkey.clone(),
                                format!(
                                    "{pattern:?}: a wildcard after ${{{claim}}} also matches \
                                     topics of other {claim} values (with {claim} = \"alice\", \
                                     those of \"alice.bob\"); end the pattern with literal \
                                     names instead, e.g. \"user.${{{claim}}}.{{inbox,feed}}\""
                                ),
                            ));
                        }
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
                warnings,
            })
        } else {
            Err(issues)
        }
    }
}

pub(super) fn compile_claims(
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

pub(super) fn parse_effect(text: &str, key: &str, issues: &mut Vec<Issue>) -> Effect {
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
