//! Globs: the one way they are parsed, how claim values become glob text,
//! and what one rule matches for one identity.

use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobMatcher};

use super::program::Scratch;
use super::template::Templated;

/// What one rule matches for one identity; any one pattern matching
/// suffices. Plain globs are matched each by its own regex rather than
/// through a `GlobSet`: the set's shortcuts read a path's file name and miss
/// topics ending in `/..` (the set says `**..` does not match `a/..`), and a
/// topic is not a path.
#[derive(Debug)]
pub(super) enum Globs {
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
    pub(super) fn is_match(&self, topic: &str, scratch: &mut Option<Scratch>) -> bool {
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

/// The one place globs are parsed, so that templates, static rules and the
/// compile-time check agree: `*` crosses `.` and `/`, `\` escapes on every
/// platform (globset turns escapes off on Windows by default), and an empty
/// alternative is kept, so `{,x}` means "nothing or x" and an empty claim
/// value in `{a,${sub}}` stands for itself.
pub(super) fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
}

pub(super) fn build_globs(
    patterns: impl IntoIterator<Item = String>,
) -> Result<Vec<GlobMatcher>, globset::Error> {
    patterns
        .into_iter()
        .map(|pattern| glob(&pattern).map(|glob| glob.compile_matcher()))
        .collect()
}

/// A claim value as glob text matching exactly that value wherever a
/// template puts it (outside a class, which `Template::parse` refuses).
/// Braces isolate it: globset decides whether `**` is recursive by looking
/// at the raw character beside it, so an escaped `,` or `/` from a value
/// right next to a template's `**` would otherwise change its meaning.
pub(super) fn literal(value: &str) -> String {
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
