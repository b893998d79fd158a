//! Topic ACL: ordered glob rules, the first match decides (docs/CONFIG.md,
//! `[acl]`).
//!
//! [`Acl::compile`] validates the rules and compiles every pattern once per
//! config: plain globs with globset, `${claim}` templates into a
//! `program::Program` that leaves the claims open (`tokens` reads a
//! template exactly as globset reads the filled glob). [`Acl::bind`] turns
//! the rules into a [`Policy`] for one identity at authorization: rules
//! whose `claims` conditions fail are dropped, and the claims the templates
//! name are looked up, nothing compiled. A value then matches only itself,
//! as the escaped, braced literal a filled glob would hold (see
//! `globs::literal`), so that no value can widen a rule. [`Policy::check`]
//! is a pure lookup per subscribe.
//!
//! Every glob is parsed with the same options on every platform: `*` also
//! matches `.` and `/`, `\` escapes the next character (docs/CONFIG.md),
//! and `{,x}` keeps its empty alternative.
//!
//! The files follow the data: `raw` is the `[acl]` table as written,
//! `compile` validates it into an [`Acl`], `policy` binds an `Acl` to one
//! identity and checks topics, `claims` reads claim values from a token and
//! `globs` builds and matches globs; `template`, `tokens` and `program`
//! compile `${claim}` templates once per config.

use std::sync::Arc;

use serde_json::Value;

use crate::issues::Issue;

mod claims;
mod compile;
mod globs;
mod policy;
mod program;
mod raw;
mod template;
mod tokens;

#[cfg(test)]
use globs::escape;
pub use policy::Policy;
pub use raw::{RawAcl, RawRule};

use claims::ClaimPath;
use globs::Globs;
use template::{Template, Templated};

/// What a rule, or the default, decides.
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

/// The decision `effect` makes, naming the rule that matched (`None`: the
/// default).
fn decide(effect: Effect, rule: Option<usize>) -> Decision {
    match effect {
        Effect::Allow => Decision::Allow(rule),
        Effect::Deny => Decision::Deny(rule),
    }
}

/// A rule's topic patterns, compiled at config load as far as they can be.
#[derive(Debug)]
enum Patterns {
    /// No `${claim}`: the same globs for everyone.
    Static(Arc<Globs>),
    /// With `${claim}`s: compiled once, the values supplied per identity.
    Templated(Arc<Templated>),
    /// Filled and compiled per identity: the fallback for a rule with a
    /// template whose reading by `tokens::parse` does not reproduce
    /// globset's regex (none known; see `Acl::compile`).
    PerIdentity(Vec<Template>),
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
    /// Valid but risky patterns, with their keys: logged at start and on
    /// reload, printed by `check`.
    warnings: Vec<Issue>,
}

impl Acl {
    /// Valid but risky patterns, with their keys.
    pub fn warnings(&self) -> &[Issue] {
        &self.warnings
    }
}

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod tests;
