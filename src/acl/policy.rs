//! The ACL bound to one identity, and the check of one topic against it.

use std::sync::Arc;

use super::claims::{ClaimPath, claim_matches, scalar_text};
use super::globs::{Globs, build_globs};
use super::{Acl, Decision, Effect, Patterns, decide};
use crate::auth::Identity;

/// The ACL as it applies to one identity: the rules whose claims hold,
/// templates bound to the identity's claim values.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The decision when no rule matches.
    pub(super) default: Effect,
    /// `(rule index, its globs, its effect)` for the rules that apply; the
    /// index is the rule's position in the file, for logs and details.
    pub(super) rules: Vec<(usize, Arc<Globs>, Effect)>,
}

impl Acl {
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
