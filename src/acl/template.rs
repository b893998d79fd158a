//! `${claim}` templates: where the claims sit in a pattern, the pattern
//! filled with one identity's values (the per-identity fallback), and a
//! rule's templates compiled once for every identity.

use globset::GlobMatcher;

use super::claims::ClaimPath;
use super::globs::{build_globs, glob, literal};
use super::program::Program;
use super::tokens::{self, Item};

/// A pattern split into literal glob text and `${claim}` references.
#[derive(Debug)]
pub(super) struct Template(Vec<Piece>);

#[derive(Debug)]
pub(super) enum Piece {
    Glob(String),
    Claim(ClaimPath),
}

impl Template {
    /// Splits `pattern` at its `${claim}` references. The scan follows
    /// globset's own reading of the glob, so that `\${` stays literal text
    /// and a reference inside a `[...]` class, where globset has no escapes
    /// and a value such as `a-z` would become a range, is refused.
    pub(super) fn parse(pattern: &str) -> Result<Self, String> {
        let bytes = pattern.as_bytes();
        let mut pieces = Vec::new();
        // Start of the glob text not yet pushed. Every index below sits on an
        // ASCII byte, so slicing there is always on a char boundary.
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'[' => {
                    // `[!` and `[^` negate; a `]` right after the opening
                    // (and negation) is a member, the next one closes.
                    let mut j = i + 1;
                    if matches!(bytes.get(j), Some(b'!' | b'^')) {
                        j += 1;
                    }
                    if bytes.get(j) == Some(&b']') {
                        j += 1;
                    }
                    let end = bytes[j.min(bytes.len())..]
                        .iter()
                        .position(|&b| b == b']')
                        .map_or(bytes.len(), |p| j + p + 1);
                    if pattern[i..end].contains("${") {
                        return Err(format!(
                            "a ${{claim}} cannot be used inside a [...] class in {pattern:?}"
                        ));
                    }
                    i = end;
                }
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    if start < i {
                        pieces.push(Piece::Glob(pattern[start..i].to_string()));
                    }
                    let after = i + 2;
                    let end = pattern[after..]
                        .find('}')
                        .map(|p| after + p)
                        .ok_or_else(|| format!("unterminated ${{ in {pattern:?}"))?;
                    let name = &pattern[after..end];
                    let valid = !name.is_empty()
                        && name.split('.').all(|segment| !segment.is_empty())
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if !valid {
                        return Err(format!(
                            "bad claim name {name:?} in {pattern:?}: use letters, digits, '_', '-' \
                             and '.' between names"
                        ));
                    }
                    pieces.push(Piece::Claim(ClaimPath::new(name)));
                    i = end + 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        if start < bytes.len() {
            pieces.push(Piece::Glob(pattern[start..].to_string()));
        }
        Ok(Self(pieces))
    }

    /// The first claim followed, anywhere later in the pattern, by a
    /// wildcard (`*`, `?` or a `[...]` class). Each of those can match the
    /// segment delimiter, so the claim value `alice` then also reaches
    /// topics of a claim value such as `alice.bob` (`user.${sub}.*` matches
    /// `user.alice.bob.inbox`).
    pub(super) fn claim_before_wildcard(&self) -> Option<&str> {
        let mut claim = None;
        for piece in &self.0 {
            match piece {
                Piece::Claim(path) => {
                    claim.get_or_insert(path.name.as_str());
                }
                Piece::Glob(text) if claim.is_some() && has_wildcard(text) => return claim,
                Piece::Glob(_) => {}
            }
        }
        None
    }

    pub(super) fn is_static(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Piece::Glob(_)))
    }

    /// Fills claims with `value`; a missing claim becomes an empty string.
    pub(super) fn fill(&self, value: &dyn Fn(&ClaimPath) -> Option<String>) -> String {
        self.try_fill(&|path| Some(value(path).unwrap_or_default()))
            .unwrap_or_default()
    }

    /// Fills claims with `value`, each as a [`literal`]; `None` when a claim
    /// is missing.
    pub(super) fn try_fill(&self, value: &dyn Fn(&ClaimPath) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Glob(text) => out.push_str(text),
                Piece::Claim(path) => out.push_str(&literal(&value(path)?)),
            }
        }
        Some(out)
    }
}

/// Whether glob text holds an unescaped `*`, `?` or `[`.
fn has_wildcard(text: &str) -> bool {
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
    }
    false
}

impl Template {
    /// The template as [`tokens::parse`](super::tokens::parse) reads it,
    /// with each claim numbered by `index`.
    pub(super) fn items(&self, index: &mut dyn FnMut(&ClaimPath) -> usize) -> Vec<Item> {
        let mut items = Vec::new();
        for piece in &self.0 {
            match piece {
                Piece::Glob(text) => items.extend(text.chars().map(Item::Char)),
                Piece::Claim(path) => items.push(Item::Claim(index(path))),
            }
        }
        items
    }
}

/// A templated rule's patterns, shared by every identity.
#[derive(Debug)]
pub(super) struct Templated {
    /// The claims the rule's templates name, as indices into
    /// `Acl::template_claims`: the rule applies only when all have values.
    pub(super) claims: Vec<usize>,
    /// The rule's patterns without a claim.
    pub(super) globs: Vec<GlobMatcher>,
    /// The rule's patterns with claims.
    pub(super) programs: Vec<Program>,
}

/// Claim values to check `tokens::parse` against globset with: empty, plain,
/// and every kind of character escaping deals with. A claim's reading does
/// not depend on its value (it is always a braced literal), so agreeing for
/// these is agreeing for all.
const STAND_INS: [&str; 3] = ["x", "", "a*?[]{,}\\é/."];

/// A templated rule's patterns compiled once for every identity, the claims
/// they name added to `claims`; or `None`, for the per-identity fallback,
/// when `tokens::parse` cannot read a template exactly as globset does
/// (checked by comparing the regex each builds, for each of `STAND_INS`).
pub(super) fn compile_templated(
    templates: &[Template],
    claims: &mut Vec<ClaimPath>,
) -> Option<Templated> {
    let mut rule_claims = Vec::new();
    let mut statics = Vec::new();
    let mut programs = Vec::new();
    for template in templates {
        if template.is_static() {
            statics.push(template.fill(&|_| None));
            continue;
        }
        let items = template.items(&mut |path| {
            let n = claims
                .iter()
                .position(|known| known.name == path.name)
                .unwrap_or_else(|| {
                    claims.push(path.clone());
                    claims.len() - 1
                });
            if !rule_claims.contains(&n) {
                rule_claims.push(n);
            }
            n
        });
        let tokens = tokens::parse(items)?;
        for stand_in in STAND_INS {
            let filled = glob(&template.fill(&|_| Some(stand_in.to_string()))).ok()?;
            if filled.regex() != tokens::regex(&tokens, stand_in) {
                return None;
            }
        }
        programs.push(Program::compile(&tokens));
    }
    Some(Templated {
        claims: rule_claims,
        globs: build_globs(statics).ok()?,
        programs,
    })
}
